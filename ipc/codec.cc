#include "ipc/codec.h"

namespace budgetd::ipc {

std::string_view call_error_name(CallError e) {
  return e == CallError::invalid_json ? "invalid_json" : "not_a_call";
}

std::expected<Call, CallError> parse_call(simdjson::dom::parser& parser, std::string_view message) {
  simdjson::dom::element doc;
  // realloc_if_needed=false: the framer's padding makes the in-place parse safe.
  if (parser.parse(message.data(), message.size(), false).get(doc) != simdjson::SUCCESS)
    return std::unexpected(CallError::invalid_json);
  simdjson::dom::object obj;
  if (doc.get_object().get(obj) != simdjson::SUCCESS) return std::unexpected(CallError::not_a_call);
  // One walk over the fields instead of a lookup per name; the first of a repeated name
  // counts, as with simdjson's lookup.
  Call call;
  bool have_method = false, have_parameters = false, have_oneway = false, have_more = false;
  for (auto field : obj) {
    const std::string_view k = field.key;
    if (k == "method" && !have_method) {
      have_method = true;
      if (field.value.get_string().get(call.method) != simdjson::SUCCESS)
        return std::unexpected(CallError::not_a_call);
    } else if (k == "parameters" && !have_parameters) {
      have_parameters = true;
      call.parameters = field.value;
    } else if (k == "oneway" && !have_oneway) {
      have_oneway = true;
      bool flag;
      if (field.value.get_bool().get(flag) == simdjson::SUCCESS) call.oneway = flag;
    } else if (k == "more" && !have_more) {
      have_more = true;
      bool flag;
      if (field.value.get_bool().get(flag) == simdjson::SUCCESS) call.more = flag;
    }
  }
  if (!have_method) return std::unexpected(CallError::not_a_call);
  return call;
}

Params::Params(std::optional<simdjson::dom::element> e) {
  // Absent, null and {} are all "no parameters" (varlink clients differ here).
  if (!e || e->is_null()) return;
  if (e->is_object()) {
    obj_ = e->get_object().value_unsafe();
    present_ = true;
    indexed_ = true;
    for (auto field : obj_) {
      if (count_ == kIndexed) {
        indexed_ = false;
        break;
      }
      fields_[count_++] = Field{field.key, field.value};
      key_bits_ |= key_bit(field.key);
    }
  } else {
    // A non-object "parameters" is itself the bad parameter.
    bad_ = "parameters";
  }
}

std::optional<simdjson::dom::element> Params::get(std::string_view name) const {
  if (!present_) return std::nullopt;
  simdjson::dom::element e;
  if (indexed_) {
    if ((key_bits_ & key_bit(name)) == 0) return std::nullopt;
    const Field* found = nullptr;
    for (std::size_t i = 0; i < count_; ++i)
      if (fields_[i].key == name) {
        found = &fields_[i];
        break;
      }
    if (!found) return std::nullopt;
    e = found->value;
  } else if (obj_[name].get(e) != simdjson::SUCCESS) {
    return std::nullopt;
  }
  if (e.is_null()) return std::nullopt;
  return e;
}

bool Params::has(std::string_view name) const { return get(name).has_value(); }

void Params::fail(std::string_view name) {
  if (bad_.empty()) bad_ = std::string(name);
}

std::string_view Params::str(std::string_view name) {
  auto e = get(name);
  std::string_view v;
  if (!e || e->get_string().get(v) != simdjson::SUCCESS) fail(name);
  return v;
}

std::string_view Params::str_or(std::string_view name, std::string_view def) {
  auto e = get(name);
  if (!e) return def;
  std::string_view v;
  if (e->get_string().get(v) != simdjson::SUCCESS) {
    fail(name);
    return def;
  }
  return v;
}

uint64_t Params::u64(std::string_view name) {
  auto v = opt_u64(name);
  if (!v) fail(name);
  return v.value_or(0);
}

std::optional<uint64_t> Params::opt_u64(std::string_view name) {
  auto e = get(name);
  if (!e) return std::nullopt;
  uint64_t v;
  if (e->get_uint64().get(v) != simdjson::SUCCESS) {
    fail(name);  // negative, fractional, too large or not a number
    return std::nullopt;
  }
  return v;
}

uint64_t Params::u64_or(std::string_view name, uint64_t def) { return opt_u64(name).value_or(def); }

int64_t Params::i64_or(std::string_view name, int64_t def) {
  auto e = get(name);
  if (!e) return def;
  int64_t v;
  if (e->get_int64().get(v) != simdjson::SUCCESS) {
    fail(name);
    return def;
  }
  return v;
}

bool Params::bool_or(std::string_view name, bool def) {
  auto e = get(name);
  if (!e) return def;
  bool v;
  if (e->get_bool().get(v) != simdjson::SUCCESS) {
    fail(name);
    return def;
  }
  return v;
}

std::optional<Decimal> Params::opt_decimal(std::string_view name) {
  auto e = get(name);
  if (!e) return std::nullopt;
  std::string_view s;
  uint64_t u;
  if (e->get_string().get(s) == simdjson::SUCCESS) {
    auto d = Decimal::parse(s);
    if (d) return *d;
  } else if (e->get_uint64().get(u) == simdjson::SUCCESS) {
    return Decimal::from_int(u);
  }
  fail(name);
  return std::nullopt;
}

Decimal Params::decimal(std::string_view name) {
  auto d = opt_decimal(name);
  if (!d) fail(name);
  return d.value_or(Decimal());
}

std::optional<uint64_t> Params::opt_limit(std::string_view name) {
  auto e = get(name);
  if (!e) return std::nullopt;
  std::string_view s;
  if (e->get_string().get(s) == simdjson::SUCCESS) {
    if (s == "unlimited") return kUnlimited;
    fail(name);
    return std::nullopt;
  }
  return opt_u64(name);
}

std::optional<Decimal> Params::opt_decimal_limit(std::string_view name) {
  auto e = get(name);
  if (!e) return std::nullopt;
  std::string_view s;
  if (e->get_string().get(s) == simdjson::SUCCESS && s == "unlimited") return kUnlimitedAmount;
  return opt_decimal(name);
}

std::optional<std::string> Params::scalar_text(std::string_view name) {
  auto e = get(name);
  if (!e) return std::nullopt;
  std::string_view s;
  uint64_t u;
  if (e->get_string().get(s) == simdjson::SUCCESS) return std::string(s);
  if (e->get_uint64().get(u) == simdjson::SUCCESS) return std::to_string(u);
  fail(name);
  return std::nullopt;
}

Params Params::object(std::string_view name) {
  auto e = get(name);
  if (!e) return Params(std::nullopt);
  if (!e->is_object()) {
    fail(name);
    return Params(std::nullopt);
  }
  return Params(*e);
}

std::optional<simdjson::dom::array> Params::array(std::string_view name) {
  auto e = get(name);
  if (!e) return std::nullopt;
  simdjson::dom::array a;
  if (e->get_array().get(a) != simdjson::SUCCESS) {
    fail(name);
    return std::nullopt;
  }
  return a;
}

}  // namespace budgetd::ipc
