#include "ipc/service.h"

#include "ipc/errors.h"
#include "ipc/framer.h"

namespace budgetd::ipc {

const std::string_view kVarlinkServiceInterface = R"(# The Varlink Service Interface is provided by every varlink service. It
# describes the service and the interfaces it implements.
interface org.varlink.service

# Get a list of all the interfaces a service provides and information
# about the implementation.
method GetInfo() -> (
  vendor: string,
  product: string,
  version: string,
  url: string,
  interfaces: []string
)

# Get the description of an interface that is implemented by this service.
method GetInterfaceDescription(interface: string) -> (description: string)

# The requested interface was not found.
error InterfaceNotFound (interface: string)

# The requested method was not found
error MethodNotFound (method: string)

# The interface defines the requested method, but the service does not
# implement it.
error MethodNotImplemented (method: string)

# One of the passed parameters is invalid.
error InvalidParameter (parameter: string)

# Client is denied access
error PermissionDenied ()

# Method is expected to be called with 'more' set to true, but wasn't
error ExpectedMore ()
)";

// ---- Reply ----------------------------------------------------------------------------

void Reply::begin(std::string_view head) {
  if (started_) return;
  started_ = true;
  out_ += head;
}

JsonWriter& Reply::ok() {
  begin("{\"parameters\":{");
  return w_;
}

JsonWriter& Reply::stream() {
  begin("{\"continues\":true,\"parameters\":{");
  return w_;
}

JsonWriter& Reply::error(std::string_view name) {
  begin("{\"error\":");
  append_json_string(out_, name);
  out_ += ",\"parameters\":{";
  is_error_ = true;
  return w_;
}

void Reply::invalid_parameter(std::string_view name) { error(err::kInvalidParameter).field("parameter", name); }

void Reply::fail(const Error& e) { write_error(error(error_name(e.code)), e); }

void Reply::refuse(const Refusal& r) { write_refusal(error(refusal_error_name(r.reason)), r); }

void Reply::finish() {
  if (finished_) return;
  if (!started_) ok();
  finished_ = true;
  out_ += "}}";
  out_.push_back('\0');
}

void Reply::replay(std::string_view frame) {
  if (started_) return;
  started_ = finished_ = true;
  out_ += frame;
  out_.push_back('\0');
}

std::string_view Reply::frame() const {
  std::string_view f(out_);
  f.remove_prefix(start_);
  if (finished_ && !f.empty()) f.remove_suffix(1);
  return f;
}

// ---- Service --------------------------------------------------------------------------

Service::Service(ServiceInfo info) : info_(std::move(info)) { add_interface(kVarlinkServiceInterface); }

namespace {
std::string_view interface_name_of(std::string_view description) {
  // The first "interface NAME" line names it; comments come before it.
  std::size_t pos = 0;
  while (pos < description.size()) {
    std::size_t eol = description.find('\n', pos);
    if (eol == std::string_view::npos) eol = description.size();
    std::string_view line = description.substr(pos, eol - pos);
    if (line.starts_with("interface ")) {
      line.remove_prefix(10);
      while (!line.empty() && (line.back() == ' ' || line.back() == '\r')) line.remove_suffix(1);
      return line;
    }
    pos = eol + 1;
  }
  return {};
}
}  // namespace

void Service::add_interface(std::string_view description) {
  std::string name(interface_name_of(description));
  interface_names_.push_back(name);
  descriptions_.emplace(std::move(name), std::string(description));
}

void Service::add_method(std::string_view full_name, Handler h) { methods_.emplace(std::string(full_name), h); }

std::string_view Service::description(std::string_view interface) const {
  auto it = descriptions_.find(interface);
  return it == descriptions_.end() ? std::string_view() : std::string_view(it->second);
}

Service::Outcome Service::handle(std::string_view message, Engine& engine, const Peer& peer, Hooks& hooks,
                                 std::string& out) {
  auto call = parse_call(parser_, message);
  if (!call) return Outcome::close;
  ++calls_;
  Params params(call->parameters);
  Reply reply(out, call->oneway);
  CallContext ctx{engine, peer, hooks, *call, params, reply, {}};
  const std::string_view method = call->method;

  if (method == "org.varlink.service.GetInfo") {
    auto& w = reply.ok();
    w.field("vendor", info_.vendor).field("product", info_.product).field("version", info_.version);
    w.field("url", info_.url).key("interfaces").begin_array();
    for (const auto& n : interface_names_) w.str(n);
    w.end_array();
  } else if (method == "org.varlink.service.GetInterfaceDescription") {
    std::string_view name = params.str("interface");
    if (!params.ok()) {
      reply.invalid_parameter(params.bad());
    } else if (auto d = description(name); d.empty()) {
      reply.error(err::kInterfaceNotFound).field("interface", name);
    } else {
      reply.ok().field("description", d);
    }
  } else if (auto it = methods_.find(method); it != methods_.end()) {
    if (!params.ok()) {
      reply.invalid_parameter(params.bad());
    } else {
      // Handlers read every parameter and check params.ok() before they act, so a bad
      // parameter changes nothing.
      it->second(ctx);
    }
  } else {
    std::size_t dot = method.rfind('.');
    std::string_view iface = dot == std::string_view::npos ? std::string_view() : method.substr(0, dot);
    if (description(iface).empty())
      reply.error(err::kInterfaceNotFound).field("interface", iface);
    else
      reply.error(err::kMethodNotFound).field("method", method);
  }
  reply.finish();
  if (!ctx.remember_key.empty() && !reply.is_error())
    hooks.remember_reply(method, peer.uid, ctx.remember_key, reply.frame());
  return Outcome::replied;
}

}  // namespace budgetd::ipc
