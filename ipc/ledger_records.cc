#include "ipc/ledger_records.h"

#include <simdjson.h>

#include "ipc/errors.h"

namespace budgetd::ipc {

std::map<std::string, std::string> read_labels(Params& p) {
  std::map<std::string, std::string> out;
  Params labels = p.object("labels");
  if (!labels.present()) return out;
  for (auto field : labels.raw()) {
    std::string_view key = field.key;
    std::string_view value;
    if (field.value.get_string().get(value) != simdjson::SUCCESS || key.empty() ||
        key.size() > kMaxLabelKeyBytes || value.size() > kMaxLabelValueBytes ||
        out.size() >= kMaxLabels) {
      p.fail("labels");
      return {};
    }
    out.emplace(key, value);
  }
  return out;
}

std::string_view read_idempotency_key(Params& p) {
  std::string_view key = p.str_or("idempotency_key", "");
  if (key.size() > kMaxIdempotencyKeyBytes) p.fail("idempotency_key");
  return key;
}

bool replay_if_answered(CallContext& ctx, std::string_view key) {
  if (key.empty()) return false;
  if (auto prev = ctx.hooks.idempotent_reply(ctx.call.method, ctx.peer.uid, key)) {
    ctx.reply.replay(*prev);
    return true;
  }
  ctx.remember_key = key;
  return false;
}

bool durable_ok(CallContext& ctx) {
  auto r = ctx.hooks.need_durable();
  if (r) return true;
  ctx.reply.error(err::kStorageFailed).field("message", r.error().detail.empty() ? r.error().message() : r.error().detail);
  return false;
}

LedgerRecord ledger_record(CallContext& ctx, LedgerKind kind) {
  LedgerRecord r;
  r.kind = kind;
  r.recorded_at = ctx.engine.now();
  r.uid = ctx.peer.uid;
  r.pid = ctx.peer.pid;
  r.idempotency_key = std::string(ctx.remember_key);
  return r;
}

void add_priced(LedgerRecord& r, PriceTable::Priced&& priced) {
  r.items = std::move(priced.items);
  r.total_cost = priced.total_cost;
}

void audit(CallContext& ctx) {
  LedgerRecord r = ledger_record(ctx, LedgerKind::audit);
  std::string_view method = ctx.call.method;
  r.action = std::string(method.substr(method.rfind('.') + 1));
  if (ctx.call.parameters) {
    r.detail = simdjson::minify(*ctx.call.parameters);
    if (r.detail.size() > kMaxAuditDetailBytes) r.detail.resize(kMaxAuditDetailBytes);
  }
  Params& p = ctx.params;
  // The target, when the call names one, so an audit trail can be filtered like usage.
  if (p.has("process")) r.process = std::string(p.str_or("process", ""));
  // Admin.SetLimits names its node "path"; the others "scope".
  const std::string_view scope_param = p.has("scope") ? "scope" : "path";
  if (p.has(scope_param)) {
    // Normalized ("org/team", as the engine and the ledger's scope filter spell paths).
    std::string_view given = p.str_or(scope_param, "");
    auto path = normalize_path(given);
    r.scope = path ? *path : std::string(given);
  }
  if (p.has("thread")) r.thread = std::string(p.str_or("thread", ""));
  ctx.hooks.append(std::move(r));
}

}  // namespace budgetd::ipc
