#include "cli/budgetctl_args.h"

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdlib>
#include <map>
#include <ostream>
#include <set>
#include <system_error>
#include <utility>

namespace budgetd::cli {

namespace {

using client::Reply;
using client::VarlinkClient;

// ---- The commands --------------------------------------------------------------------------

constexpr std::array kCommands = {
    CommandSpec{"status", "", "daemon figures and system totals", "Stats, GetSystemUsage",
                "Shows the tracked and active processes, system-wide usage, consumption\n"
                "statistics and the daemon's own figures.\n"},
    CommandSpec{"ps", "", "tracked processes: usage against limits", "ListProcesses",
                "One row per tracked process. Each resource cell reads \"used/limit (pct%)\",\n"
                "or just the usage when the limit is unlimited. STATE is \"ok\" when the process\n"
                "is within its quota, else the reason code.\n"},
    CommandSpec{"adjust", "PID key=value...", "change a process's quota live", "AdjustQuota",
                "Keys are quota fields: max_llm_calls, max_tool_calls, max_agent_hops,\n"
                "max_iterations, max_tokens, max_cost, max_input_tokens, max_output_tokens,\n"
                "max_context_tokens, timeout_seconds, soft_timeout_seconds, kill_grace_seconds,\n"
                "on_timeout, on_violation. The max_ prefix and the _seconds suffix may be left\n"
                "out (llm_calls=100, timeout=600). Values are numbers, \"unlimited\", or an\n"
                "action (none, terminate, pause). All fields change, or none.\n"
                "Example: budgetctl adjust 4242 llm_calls=200 cost=5.00 on_violation=pause\n"},
    CommandSpec{"set-limits", "(PATH | --plan NAME | --tier NAME) key=value...",
                "change a scope node, a plan or a tier", "SetLimits",
                "PATH is a scope path (\"org/acme/team/research\", \"/\" for the root), created\n"
                "when absent; --plan or --tier change that template instead.\n"
                "Keys:\n"
                "  RESOURCE=N            hard limit (admission refused once used >= N)\n"
                "  RESOURCE.hard=N       the same\n"
                "  RESOURCE.soft=N       soft limit: a warning when crossed\n"
                "  RESOURCE.approval=N   a consumption above N waits for approve/deny\n"
                "  plan=NAME, tier=NAME  attach a template to the node (\"\" detaches)\n"
                "  reset=PERIOD          never, hourly, daily, weekly or monthly\n"
                "  clear=true            drop the node's own limits before applying these\n"
                "N is a decimal or \"unlimited\". Resources: llm_calls, tool_calls, agent_hops,\n"
                "iterations, tokens_in, tokens_out, tokens, cost, or a custom name.\n"
                "Example: budgetctl set-limits org/acme cost=1000 cost.soft=800 reset=monthly\n"},
    CommandSpec{"approve", "ID", "approve a pending consumption", "Approve", ""},
    CommandSpec{"deny", "ID", "deny a pending consumption", "Deny", ""},
    CommandSpec{"pause", "PID", "stop a process (SIGSTOP) until resumed", "Pause", ""},
    CommandSpec{"resume", "PID", "continue a paused process (SIGCONT)", "Resume", ""},
    CommandSpec{"watch", "", "print each event as it happens, one per line", "Watch",
                "Runs until interrupted (Ctrl-C). With --json, each line is the reply's JSON.\n"},
    CommandSpec{"reload", "", "re-read the configuration, keeping all usage", "Reload", ""},
    CommandSpec{"pending", "", "consumptions waiting for approve or deny", "ListPending", ""},
    CommandSpec{"scopes", "", "the budget tree: each node's usage and limits", "ListScopes", ""},
    CommandSpec{"scope", "PATH", "one scope node's usage and limits", "GetScope", ""},
    CommandSpec{"templates", "", "the plans and tiers", "ListTemplates", ""},
    CommandSpec{
        "usage", "SUBCOMMAND [ARGS...]", "usage reports: the ledger, prices, threads, agents",
        "",
        "Each subcommand calls the io.budgetd.Usage method of its name (summary calls\n"
        "io.budgetd.Usage.Summary, ...). pricing and stats are open to everyone; the rest\n"
        "are for operators.\n"
        "\n"
        "  summary START END [scope=PATH] [by=GROUP]\n"
        "      usage and cost from START to END, grouped by resource (the default), agent,\n"
        "      model, thread, process or scope. START and END are dates (2024-01-31; END\n"
        "      includes its day) or UTC instants (2024-01-31T12:00:00Z).\n"
        "  records [KEY=VALUE...]\n"
        "      ledger records, newest first. Keys: resource, process, agent, model, thread,\n"
        "      scope, kind (usage, consumption, commit, reservation, thread, audit), since,\n"
        "      until, limit (1..1000, default 100), cursor (from the previous page).\n"
        "  pricing                 the price table\n"
        "  stats                   consumption statistics\n"
        "  overview                thread token totals; tokens and cost per agent and model\n"
        "  threads [limit=N]       thread budgets, most used first\n"
        "  thread ID               one thread's budget\n"
        "  agent NAME              one agent's usage, of all time\n"
        "  model NAME              one model's usage, of all time\n"
        "  reset (scope=PATH | process=PID | thread=ID)\n"
        "      zero that usage now; the ledger keeps an audit record\n"
        "Example: budgetctl usage summary 2024-01-01 2024-01-31 by=model\n"},
    CommandSpec{
        "call", "METHOD [JSON] [--more | --oneway]",
        "call any varlink method, print the reply JSON", "",
        "METHOD is a full name (io.budgetd.Agent.GetUsage), or Agent.X / Admin.X / Usage.X,\n"
        "or a bare name of io.budgetd.Admin. JSON is the parameters object (default {}).\n"
        "--more streams the replies, one JSON line each (implied for Watch); --oneway\n"
        "expects no reply.\n"
        "Example: budgetctl call Agent.GetUsage '{\"process\": \"4242\"}'\n"},
    CommandSpec{"help", "[COMMAND]", "show this help, or a command's", "", ""},
};

// QuotaInput's fields, in the interface file's order.
constexpr std::array<std::string_view, 14> kQuotaFields = {
    "max_input_tokens", "max_output_tokens", "max_context_tokens",   "max_llm_calls",
    "max_tool_calls",   "max_agent_hops",    "max_iterations",       "max_tokens",
    "max_cost",         "timeout_seconds",   "soft_timeout_seconds", "kill_grace_seconds",
    "on_timeout",       "on_violation"};

bool is_option(std::string_view a) { return a.size() > 1 && a[0] == '-'; }

std::expected<uint64_t, std::string> parse_id(std::string_view s, std::string_view what) {
  uint64_t v = 0;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (s.empty() || ec != std::errc{} || p != s.data() + s.size()) {
    return std::unexpected(fmt::format("{} must be a non-negative integer, not '{}'", what, s));
  }
  return v;
}

std::expected<bool, std::string> parse_bool(std::string_view key, std::string_view v) {
  if (v == "true" || v == "yes" || v == "1" || v == "on") return true;
  if (v == "false" || v == "no" || v == "0" || v == "off") return false;
  return std::unexpected(fmt::format("{} takes true or false, not '{}'", key, v));
}

std::string qualify_method(std::string_view m) {
  if (m.find('.') == std::string_view::npos) return std::string(kAdmin) + std::string(m);
  if (m.starts_with("Admin.") || m.starts_with("Agent.") || m.starts_with("Usage.")) {
    return "io.budgetd." + std::string(m);
  }
  return std::string(m);
}

std::size_t display_width(std::string_view s) {
  std::size_t n = 0;
  for (unsigned char c : s) n += (c & 0xC0) != 0x80;  // count UTF-8 lead bytes
  return n;
}

Request make_request(std::string method, Json params = Json::object()) {
  Request r;
  r.method = std::move(method);
  r.params = std::move(params);
  return r;
}

// A limit column: "-" for unlimited.
std::string limit_cell(const Json& obj, std::string_view key) {
  std::string s = field_cell(obj, key);
  return s == "unlimited" ? "-" : s;
}

const Json& member(const Json& obj, std::string_view key) {
  static const Json kNull;
  if (!obj.is_object()) return kNull;
  auto it = obj.find(key);
  return it == obj.end() ? kNull : *it;
}

std::string join(const std::vector<std::string>& parts, std::string_view sep) {
  std::string out;
  for (std::size_t i = 0; i < parts.size(); ++i) {
    if (i) out += sep;
    out += parts[i];
  }
  return out;
}

}  // namespace

// ---- The command line ----------------------------------------------------------------------

std::span<const CommandSpec> commands() { return kCommands; }

const CommandSpec* find_command(std::string_view name) {
  for (const auto& c : kCommands) {
    if (c.name == name) return &c;
  }
  return nullptr;
}

std::string usage_text() {
  std::string s =
      "Usage: budgetctl [--socket PATH] [--json] [--timeout SECONDS] COMMAND [ARGS...]\n"
      "\n"
      "Operate budgetd, the budget daemon for LLM agents, over its varlink socket\n"
      "(io.budgetd.Admin and io.budgetd.Usage; operators only, but for usage pricing\n"
      "and usage stats).\n"
      "\n"
      "Commands:\n";
  constexpr std::size_t kColumn = 28;  // where summaries start; longer heads get their own line
  for (const auto& c : kCommands) {
    std::string head = "  " + std::string(c.name);
    if (!c.synopsis.empty()) head += " " + std::string(c.synopsis);
    if (head.size() + 2 > kColumn) {
      head += "\n";
      head.append(kColumn, ' ');
    } else {
      head.append(kColumn - head.size(), ' ');
    }
    s += head + std::string(c.summary) + "\n";
  }
  s += "\n"
       "Options:\n"
       "  --socket PATH       the daemon's socket (default: $BUDGETD_SOCKET, else\n"
       "                      /run/budgetd/io.budgetd as root, else\n"
       "                      $XDG_RUNTIME_DIR/budgetd/io.budgetd, else ./run/io.budgetd)\n"
       "  --json              print the reply parameters as JSON instead of tables\n"
       "  --timeout SECONDS   how long to wait for a reply (default 30)\n"
       "  -h, --help          this help; 'budgetctl COMMAND --help' for a command's\n"
       "\n"
       "Exit status: 0 on success, 1 when the daemon answers with an error (printed as\n"
       "\"error: NAME: message\"), 2 on a usage error or when the socket fails.\n";
  return s;
}

std::string command_usage(const CommandSpec& c) {
  std::string summary(c.summary);
  if (!summary.empty() && summary[0] >= 'a' && summary[0] <= 'z')
    summary[0] = static_cast<char>(summary[0] - 'a' + 'A');
  std::string s = fmt::format("Usage: budgetctl [OPTIONS] {}{}{}\n\n{}.\n", c.name,
                              c.synopsis.empty() ? "" : " ", c.synopsis, summary);
  if (!c.methods.empty()) {
    std::string calls;
    for (std::string_view rest = c.methods; !rest.empty();) {
      auto comma = rest.find(", ");
      if (!calls.empty()) calls += " and ";
      calls += std::string(kAdmin) + std::string(rest.substr(0, comma));
      rest = comma == std::string_view::npos ? std::string_view{} : rest.substr(comma + 2);
    }
    s += "Calls " + calls + ".\n";
  }
  if (!c.details.empty()) s += "\n" + std::string(c.details);
  return s;
}

std::expected<Invocation, std::string> parse_command_line(std::span<const std::string> argv) {
  Invocation inv;
  bool positional_only = false;
  for (std::size_t i = 0; i < argv.size(); ++i) {
    const std::string& a = argv[i];
    if (!positional_only) {
      if (a == "--") {
        positional_only = true;
        continue;
      }
      if (a == "--json") {
        inv.json = true;
        continue;
      }
      if (a == "--help" || a == "-h") {
        inv.help = true;
        continue;
      }
      if (a == "--socket" || a.starts_with("--socket=")) {
        if (a == "--socket") {
          if (i + 1 >= argv.size()) return std::unexpected(std::string("--socket needs a PATH"));
          inv.socket = argv[++i];
        } else {
          inv.socket = a.substr(9);
        }
        if (inv.socket.empty()) return std::unexpected(std::string("--socket needs a PATH"));
        continue;
      }
      if (a == "--timeout" || a.starts_with("--timeout=")) {
        std::string v;
        if (a == "--timeout") {
          if (i + 1 >= argv.size()) return std::unexpected(std::string("--timeout needs SECONDS"));
          v = argv[++i];
        } else {
          v = a.substr(10);
        }
        char* end = nullptr;
        double secs = std::strtod(v.c_str(), &end);
        if (v.empty() || end != v.c_str() + v.size() || !std::isfinite(secs) || secs <= 0 ||
            secs > 1e6) {
          return std::unexpected(
              fmt::format("--timeout takes a positive number of seconds, not '{}'", v));
        }
        inv.timeout = std::chrono::milliseconds(static_cast<int64_t>(std::ceil(secs * 1000)));
        continue;
      }
    }
    if (inv.command.empty()) {
      if (!positional_only && is_option(a))
        return std::unexpected(fmt::format("unknown option '{}'", a));
      inv.command = a;
      continue;
    }
    inv.args.push_back(a);
  }
  if (inv.command == "help") {
    inv.help = true;
    inv.command = inv.args.empty() ? "" : inv.args.front();
    if (inv.args.size() > 1) return std::unexpected(std::string("help takes at most one COMMAND"));
    inv.args.clear();
  }
  if (!inv.command.empty() && !find_command(inv.command)) {
    return std::unexpected(fmt::format("unknown command '{}'", inv.command));
  }
  return inv;
}

// ---- Arguments to parameters ---------------------------------------------------------------

std::expected<std::pair<std::string, std::string>, std::string> split_key_value(
    std::string_view arg) {
  auto eq = arg.find('=');
  if (eq == std::string_view::npos) {
    return std::unexpected(fmt::format("expected key=value, not '{}'", arg));
  }
  if (eq == 0) return std::unexpected(fmt::format("missing key in '{}'", arg));
  return std::pair{std::string(arg.substr(0, eq)), std::string(arg.substr(eq + 1))};
}

std::expected<Json, std::string> quota_input_from_args(std::span<const std::string> kvs) {
  Json q = Json::object();
  for (const auto& kv : kvs) {
    auto p = split_key_value(kv);
    if (!p) return std::unexpected(p.error());
    auto [key, value] = std::move(*p);
    auto known = [](std::string_view k) {
      return std::find(kQuotaFields.begin(), kQuotaFields.end(), k) != kQuotaFields.end();
    };
    std::string field = key;
    if (!known(field)) {
      if (known("max_" + key)) {
        field = "max_" + key;
      } else if (known(key + "_seconds")) {
        field = key + "_seconds";
      } else {
        return std::unexpected(
            fmt::format("unknown quota field '{}' (see budgetctl adjust --help)", key));
      }
    }
    if (value.empty()) return std::unexpected(fmt::format("{} needs a value", key));
    if (q.contains(field)) return std::unexpected(fmt::format("{} is given twice", field));
    q[field] = value;
  }
  return q;
}

std::expected<Json, std::string> set_limits_params_from_args(std::span<const std::string> kvs) {
  Json params = Json::object();
  std::map<std::string, Json> limits;  // resource -> Limit, in name order
  for (const auto& kv : kvs) {
    auto p = split_key_value(kv);
    if (!p) return std::unexpected(p.error());
    auto [key, value] = std::move(*p);
    if (key == "plan" || key == "tier" || key == "reset") {
      if (params.contains(key)) return std::unexpected(fmt::format("{} is given twice", key));
      if (key == "reset" && value.empty())
        return std::unexpected(std::string("reset needs a period"));
      params[key] = value;
      continue;
    }
    if (key == "clear") {
      auto b = parse_bool(key, value);
      if (!b) return std::unexpected(b.error());
      params["clear"] = *b;
      continue;
    }
    // RESOURCE[.hard|.soft|.approval]; custom resource names may themselves hold dots.
    std::string resource = key;
    std::string which = "hard";
    if (auto dot = key.rfind('.'); dot != std::string::npos) {
      std::string suffix = key.substr(dot + 1);
      if (suffix == "hard" || suffix == "soft" || suffix == "approval") {
        resource = key.substr(0, dot);
        which = suffix;
      }
    }
    if (resource.empty()) return std::unexpected(fmt::format("missing resource in '{}'", kv));
    if (value.empty()) return std::unexpected(fmt::format("{} needs a value", key));
    Json& limit = limits[resource];
    if (limit.is_null()) limit = Json{{"resource", resource}};
    if (limit.contains(which))
      return std::unexpected(fmt::format("{}.{} is given twice", resource, which));
    limit[which] = value;
  }
  if (!limits.empty()) {
    Json arr = Json::array();
    for (auto& [name, limit] : limits) arr.push_back(std::move(limit));
    params["limits"] = std::move(arr);
  }
  return params;
}

std::expected<std::vector<Request>, std::string> build_requests(const Invocation& inv) {
  const std::string& cmd = inv.command;
  const auto& args = inv.args;
  auto admin = [](std::string_view m) { return std::string(kAdmin) + std::string(m); };
  auto no_options = [&]() -> std::expected<void, std::string> {
    for (const auto& a : args) {
      if (is_option(a) && a.starts_with("--"))
        return std::unexpected(fmt::format("unknown option '{}'", a));
    }
    return {};
  };
  auto want = [&](std::size_t n, std::string_view what) -> std::expected<void, std::string> {
    if (auto o = no_options(); !o) return o;
    if (args.size() != n) {
      return std::unexpected(n == 0 ? fmt::format("{} takes no arguments", cmd)
                                    : fmt::format("{} takes {}", cmd, what));
    }
    return {};
  };

  std::vector<Request> out;
  if (cmd == "status") {
    if (auto w = want(0, ""); !w) return std::unexpected(w.error());
    out.push_back(make_request(admin("Stats")));
    out.push_back(make_request(admin("GetSystemUsage")));
  } else if (cmd == "ps") {
    if (auto w = want(0, ""); !w) return std::unexpected(w.error());
    out.push_back({.method = admin("ListProcesses"), .paged_key = "processes"});
  } else if (cmd == "scopes") {
    if (auto w = want(0, ""); !w) return std::unexpected(w.error());
    out.push_back({.method = admin("ListScopes"), .paged_key = "scopes"});
  } else if (cmd == "pending" || cmd == "reload" || cmd == "templates") {
    if (auto w = want(0, ""); !w) return std::unexpected(w.error());
    out.push_back(make_request(admin(cmd == "pending"  ? "ListPending"
                                     : cmd == "reload" ? "Reload"
                                                       : "ListTemplates")));
  } else if (cmd == "watch") {
    if (auto w = want(0, ""); !w) return std::unexpected(w.error());
    out.push_back({.method = admin("Watch"), .more = true});
  } else if (cmd == "scope") {
    if (auto w = want(1, "one PATH"); !w) return std::unexpected(w.error());
    out.push_back(make_request(admin("GetScope"), Json{{"path", args[0]}}));
  } else if (cmd == "pause" || cmd == "resume") {
    if (auto w = want(1, "one PID"); !w) return std::unexpected(w.error());
    if (args[0].empty()) return std::unexpected(std::string("PID is empty"));
    out.push_back(
        make_request(admin(cmd == "pause" ? "Pause" : "Resume"), Json{{"process", args[0]}}));
  } else if (cmd == "approve" || cmd == "deny") {
    if (auto w = want(1, "one request ID"); !w) return std::unexpected(w.error());
    auto id = parse_id(args[0], "ID");
    if (!id) return std::unexpected(id.error());
    out.push_back(
        make_request(admin(cmd == "approve" ? "Approve" : "Deny"), Json{{"request_id", *id}}));
  } else if (cmd == "adjust") {
    if (auto o = no_options(); !o) return std::unexpected(o.error());
    if (args.size() < 2)
      return std::unexpected(std::string("adjust takes a PID and at least one key=value"));
    if (args[0].empty() || args[0].find('=') != std::string::npos) {
      return std::unexpected(fmt::format("adjust takes a PID first, not '{}'", args[0]));
    }
    auto q = quota_input_from_args(std::span(args).subspan(1));
    if (!q) return std::unexpected(q.error());
    out.push_back(
        make_request(admin("AdjustQuota"), Json{{"process", args[0]}, {"quota", std::move(*q)}}));
  } else if (cmd == "set-limits") {
    Json target = Json::object();
    std::vector<std::string> kvs;
    for (std::size_t i = 0; i < args.size(); ++i) {
      const std::string& a = args[i];
      if (a == "--plan" || a == "--tier") {
        if (i + 1 >= args.size()) return std::unexpected(fmt::format("{} needs a NAME", a));
        if (!target.empty()) return std::unexpected(std::string("give one PATH, --plan or --tier"));
        target["template"] = args[++i];
        target["kind"] = a == "--plan" ? "plan" : "tier";
      } else if (a.starts_with("--")) {
        return std::unexpected(fmt::format("unknown option '{}'", a));
      } else if (target.empty() && a.find('=') == std::string::npos) {
        target["path"] = a;
      } else {
        kvs.push_back(a);
      }
    }
    if (target.empty())
      return std::unexpected(std::string("set-limits needs a PATH, --plan NAME or --tier NAME"));
    if (kvs.empty()) return std::unexpected(std::string("set-limits needs at least one key=value"));
    auto p = set_limits_params_from_args(kvs);
    if (!p) return std::unexpected(p.error());
    Json params = std::move(*p);
    for (auto& [k, v] : target.items()) params[k] = v;
    out.push_back(make_request(admin("SetLimits"), std::move(params)));
  } else if (cmd == "usage") {
    auto r = usage_request(args);
    if (!r) return std::unexpected(r.error());
    out.push_back(std::move(*r));
  } else if (cmd == "call") {
    Request r;
    std::vector<std::string> pos;
    for (const auto& a : args) {
      if (a == "--more") {
        r.more = true;
      } else if (a == "--oneway") {
        r.oneway = true;
      } else if (a.starts_with("--")) {
        return std::unexpected(fmt::format("unknown option '{}'", a));
      } else {
        pos.push_back(a);
      }
    }
    if (pos.empty() || pos.size() > 2)
      return std::unexpected(std::string("call takes METHOD [JSON]"));
    if (r.more && r.oneway)
      return std::unexpected(std::string("--more and --oneway exclude each other"));
    if (pos[0].empty()) return std::unexpected(std::string("METHOD is empty"));
    r.method = qualify_method(pos[0]);
    if (pos.size() == 2) {
      r.params = Json::parse(pos[1], nullptr, false);
      if (r.params.is_discarded())
        return std::unexpected(fmt::format("invalid JSON parameters: {}", pos[1]));
    }
    if (!r.oneway && r.method.ends_with(".Watch")) r.more = true;
    out.push_back(std::move(r));
  } else {
    return std::unexpected(fmt::format("unknown command '{}'", cmd));
  }
  return out;
}

// ---- Output ----------------------------------------------------------------------------------

std::string Table::render() const {
  std::size_t ncols = header.size();
  for (const auto& r : rows) ncols = std::max(ncols, r.size());
  std::vector<std::size_t> width(ncols, 0);
  auto measure = [&](const std::vector<std::string>& r) {
    for (std::size_t i = 0; i < r.size(); ++i) width[i] = std::max(width[i], display_width(r[i]));
  };
  measure(header);
  for (const auto& r : rows) measure(r);
  std::string out;
  auto line = [&](const std::vector<std::string>& r) {
    std::string l;
    for (std::size_t i = 0; i < r.size(); ++i) {
      l += r[i];
      if (i + 1 < r.size()) l.append(width[i] - display_width(r[i]) + 2, ' ');
    }
    while (!l.empty() && l.back() == ' ') l.pop_back();
    out += l;
    out += '\n';
  };
  if (!header.empty()) line(header);
  for (const auto& r : rows) line(r);
  return out;
}

std::string cell(const Json& v) {
  if (v.is_null()) return "-";
  if (v.is_string()) return v.get<std::string>();
  if (v.is_boolean()) return v.get<bool>() ? "yes" : "no";
  if (v.is_number_float()) {
    double d = v.get<double>();
    if (d == std::floor(d) && std::fabs(d) < 1e15)
      return fmt::format("{}", static_cast<int64_t>(d));
    return fmt::format("{:.3g}", d);
  }
  return v.dump(-1, ' ', false, Json::error_handler_t::replace);
}

std::string field_cell(const Json& obj, std::string_view key) { return cell(member(obj, key)); }

std::string format_duration(int64_t seconds) {
  if (seconds < 0) return "-" + format_duration(-seconds);
  int64_t d = seconds / 86400, h = seconds / 3600 % 24, m = seconds / 60 % 60, s = seconds % 60;
  if (d) return fmt::format("{}d{:02}h{:02}m{:02}s", d, h, m, s);
  if (h) return fmt::format("{}h{:02}m{:02}s", h, m, s);
  if (m) return fmt::format("{}m{:02}s", m, s);
  return fmt::format("{}s", s);
}

std::string use_cell(const Json& use) {
  std::string used = field_cell(use, "used");
  std::string limit = field_cell(use, "limit");
  if (field_cell(use, "resource") == "elapsed") {
    const Json& u = member(use, "used");
    double secs = 0;
    bool numeric = false;
    if (u.is_number()) {
      secs = u.get<double>();
      numeric = true;
    } else if (u.is_string()) {
      const std::string s = u.get<std::string>();
      char* end = nullptr;
      secs = std::strtod(s.c_str(), &end);
      numeric = !s.empty() && end == s.c_str() + s.size();
    }
    if (numeric) used = fmt::format("{:.1f}s", secs);
    if (limit != "unlimited" && limit != "-") limit += "s";
  }
  if (limit == "unlimited" || limit == "-") return used;
  std::string s = used + "/" + limit;
  if (const Json& pct = member(use, "percent"); pct.is_number()) s += " (" + cell(pct) + "%)";
  return s;
}

std::string format_processes(const Json& reply) {
  const Json& procs = member(reply, "processes");
  if (!procs.is_array() || procs.empty()) return "no processes tracked\n";
  // Column, the resource it shows, and where to find it when `resources` lacks it.
  struct Col {
    std::string_view resource, usage_key, quota_key;
  };
  static constexpr std::array<Col, 7> kCols = {{{"llm_calls", "llm_calls", "max_llm_calls"},
                                                {"tool_calls", "tool_calls", "max_tool_calls"},
                                                {"agent_hops", "agent_hops", "max_agent_hops"},
                                                {"iterations", "iterations", "max_iterations"},
                                                {"tokens", "tokens", "max_tokens"},
                                                {"cost", "cost", "max_cost"},
                                                {"elapsed", "elapsed_seconds", "timeout_seconds"}}};
  Table t;
  t.header = {"PROCESS", "SCOPE",  "LLM",  "TOOL",    "HOPS",
              "ITER",    "TOKENS", "COST", "ELAPSED", "STATE"};
  for (const auto& p : procs) {
    std::vector<std::string> row = {field_cell(p, "process"), field_cell(p, "scope")};
    const Json& resources = member(p, "resources");
    for (const auto& col : kCols) {
      const Json* use = nullptr;
      if (resources.is_array()) {
        for (const auto& r : resources) {
          if (member(r, "resource") == col.resource) {
            use = &r;
            break;
          }
        }
      }
      if (use) {
        row.push_back(use_cell(*use));
      } else {
        Json fallback = {{"resource", col.resource},
                         {"used", member(member(p, "usage"), col.usage_key)},
                         {"limit", member(member(p, "quota"), col.quota_key)}};
        row.push_back(use_cell(fallback));
      }
    }
    const Json& within = member(p, "within");
    if (within.is_boolean() && within.get<bool>()) {
      row.push_back("ok");
    } else {
      std::string reason = field_cell(p, "reason");
      row.push_back(within.is_boolean() && reason == "-" ? "over" : reason);
    }
    t.rows.push_back(std::move(row));
  }
  std::string s = t.render();
  const Json& total = member(reply, "total");
  if (total.is_number_unsigned() && total.get<uint64_t>() > procs.size()) {
    s += fmt::format("({} of {} processes shown)\n", procs.size(), total.get<uint64_t>());
  }
  return s;
}

std::string format_status(const Json& stats, const Json& sys) {
  Table t;
  auto row = [&](std::string k, std::string v) { t.rows.push_back({std::move(k), std::move(v)}); };
  row("processes", fmt::format("{} tracked, {} active", field_cell(sys, "total_processes"),
                               field_cell(sys, "active_processes")));
  row("llm calls", field_cell(sys, "system_llm_calls"));
  row("tool calls", field_cell(sys, "system_tool_calls"));
  row("tokens in", field_cell(sys, "system_tokens_in"));
  row("tokens out", field_cell(sys, "system_tokens_out"));
  row("cost", field_cell(sys, "system_cost"));
  row("consumption",
      fmt::format("{} events: {} approved, {} rejected, {} partial, {} pending",
                  field_cell(stats, "total_events"), field_cell(stats, "consumed_count"),
                  field_cell(stats, "rejected_count"), field_cell(stats, "partial"),
                  field_cell(stats, "pending")));
  const Json& d = member(stats, "daemon");
  auto has = [&](std::string_view k) { return !member(d, k).is_null(); };
  if (has("connections")) {
    std::string v = field_cell(d, "connections") + " open";
    if (has("paused_connections")) v += ", " + field_cell(d, "paused_connections") + " paused";
    row("connections", v);
  }
  if (has("calls_total") || has("calls_per_second")) {
    std::vector<std::string> parts;
    if (has("calls_total")) parts.push_back(field_cell(d, "calls_total") + " total");
    if (const Json& cps = member(d, "calls_per_second"); cps.is_number()) {
      parts.push_back(fmt::format("{:.1f}/s", cps.get<double>()));
    }
    row("calls", join(parts, ", "));
  }
  if (const Json& up = member(d, "uptime_seconds"); up.is_number_integer()) {
    row("uptime", format_duration(up.get<int64_t>()));
  }
  if (has("watchers")) row("watchers", field_cell(d, "watchers"));
  if (has("watched_pids")) row("watched pids", field_cell(d, "watched_pids"));
  return t.render();
}

namespace {

void scope_rows(Table& t, const Json& scope) {
  std::vector<std::string> head = {field_cell(scope, "path"), field_cell(scope, "plan"),
                                   field_cell(scope, "tier"), field_cell(scope, "reset")};
  const Json& res = member(scope, "resources");
  if (!res.is_array() || res.empty()) {
    head.insert(head.end(), {"-", "-", "-", "-", "-", "-"});
    t.rows.push_back(std::move(head));
    return;
  }
  for (const auto& r : res) {
    std::vector<std::string> row = head;
    std::string used = field_cell(r, "used");
    if (const Json& pct = member(r, "percent"); pct.is_number()) used += " (" + cell(pct) + "%)";
    row.insert(row.end(),
               {field_cell(r, "resource"), used, limit_cell(r, "hard"), limit_cell(r, "soft"),
                limit_cell(r, "approval"), field_cell(r, "reserved")});
    t.rows.push_back(std::move(row));
  }
}

}  // namespace

std::string format_scopes(const Json& reply) {
  const Json& scopes = member(reply, "scopes");
  if (!scopes.is_array() || scopes.empty()) return "no scopes\n";
  Table t;
  t.header = {"PATH", "PLAN", "TIER", "RESET",    "RESOURCE",
              "USED", "HARD", "SOFT", "APPROVAL", "RESERVED"};
  for (const auto& s : scopes) scope_rows(t, s);
  return t.render();
}

std::string format_scope(const Json& scope) {
  Table head;
  head.rows.push_back({"scope", field_cell(scope, "path")});
  head.rows.push_back({"plan", field_cell(scope, "plan")});
  head.rows.push_back({"tier", field_cell(scope, "tier")});
  std::string reset = field_cell(scope, "reset");
  if (!member(scope, "next_reset_at").is_null())
    reset += ", next at " + field_cell(scope, "next_reset_at");
  head.rows.push_back({"reset", reset});
  if (!member(scope, "last_reset_at").is_null())
    head.rows.push_back({"last reset", field_cell(scope, "last_reset_at")});
  std::string s = head.render();
  const Json& res = member(scope, "resources");
  if (res.is_array() && !res.empty()) {
    Table t;
    t.header = {"RESOURCE", "USED", "HARD", "SOFT", "APPROVAL", "RESERVED"};
    for (const auto& r : res) {
      std::string used = field_cell(r, "used");
      if (const Json& pct = member(r, "percent"); pct.is_number()) used += " (" + cell(pct) + "%)";
      t.rows.push_back({field_cell(r, "resource"), used, limit_cell(r, "hard"),
                        limit_cell(r, "soft"), limit_cell(r, "approval"),
                        field_cell(r, "reserved")});
    }
    s += "\n" + t.render();
  }
  return s;
}

std::string format_template(const Json& tmpl) {
  std::string s = fmt::format("{} {} (reset {})\n", field_cell(tmpl, "kind"),
                              field_cell(tmpl, "name"), field_cell(tmpl, "reset"));
  const Json& limits = member(tmpl, "limits");
  if (limits.is_array() && !limits.empty()) {
    Table t;
    t.header = {"RESOURCE", "HARD", "SOFT", "APPROVAL"};
    for (const auto& l : limits) {
      t.rows.push_back({field_cell(l, "resource"), limit_cell(l, "hard"), limit_cell(l, "soft"),
                        limit_cell(l, "approval")});
    }
    s += t.render();
  }
  return s;
}

std::string format_pending(const Json& reply) {
  const Json& reqs = member(reply, "requests");
  if (!reqs.is_array() || reqs.empty()) return "no pending requests\n";
  Table t;
  t.header = {"ID", "CONSUMER", "SCOPE", "RESOURCE", "AMOUNT", "CREATED", "EXPIRES", "CONTEXT"};
  for (const auto& r : reqs) {
    std::string consumer = "-";
    if (!member(r, "process").is_null()) {
      consumer = "process " + field_cell(r, "process");
    } else if (!member(r, "thread").is_null()) {
      consumer = "thread " + field_cell(r, "thread");
    } else {
      consumer = "scope";
    }
    t.rows.push_back({field_cell(r, "request_id"), consumer, field_cell(r, "scope"),
                      field_cell(r, "resource"), field_cell(r, "amount"),
                      field_cell(r, "created_at"), field_cell(r, "expires_at"),
                      field_cell(r, "context")});
  }
  return t.render();
}

std::string format_quota(const Json& reply) {
  std::string s;
  const Json& within = member(reply, "within");
  if (within.is_boolean()) {
    s = within.get<bool>() ? "within quota\n"
                           : fmt::format("over quota: {}\n", field_cell(reply, "reason"));
  }
  const Json& quota = member(reply, "quota");
  Table t;
  std::set<std::string> shown;
  for (auto f : kQuotaFields) {
    if (!member(quota, f).is_null()) {
      t.rows.push_back({std::string(f), field_cell(quota, f)});
      shown.insert(std::string(f));
    }
  }
  if (quota.is_object()) {
    for (const auto& [k, v] : quota.items()) {
      if (!shown.contains(k)) t.rows.push_back({k, cell(v)});
    }
  }
  return s + t.render();
}

std::string format_decision(const Json& reply, std::string_view request_id) {
  std::string s = fmt::format("request {}: {}, granted {}, remaining {}", request_id,
                              field_cell(reply, "status"), field_cell(reply, "granted"),
                              field_cell(reply, "remaining"));
  if (const Json& v = member(reply, "violation"); v.is_object()) {
    s += fmt::format(" ({}: {})", field_cell(v, "reason"), field_cell(v, "message"));
  }
  return s + "\n";
}

std::string format_event(const Json& e) {
  std::string s = field_cell(e, "at") + " " + field_cell(e, "kind");
  auto add = [&](std::string_view label, std::string_view key) {
    const Json& v = member(e, key);
    if (!v.is_null()) s += fmt::format(" {}={}", label, cell(v));
  };
  add("process", "process");
  add("thread", "thread");
  add("path", "path");
  add("resource", "resource");
  if (!member(e, "used").is_null() || !member(e, "limit").is_null()) {
    s += fmt::format(" used={}/{}", field_cell(e, "used"), field_cell(e, "limit"));
    if (const Json& pct = member(e, "percent"); pct.is_number()) s += " (" + cell(pct) + "%)";
  } else {
    add("percent", "percent");
  }
  add("reason", "reason");
  add("action", "action");
  add("grace", "grace_seconds");
  add("ref", "ref");
  add("outcome", "outcome");
  if (const Json& u = member(e, "usage"); u.is_object()) {
    s += fmt::format(" usage=[llm={} tool={} hops={} iter={} tokens={} cost={} elapsed={}]",
                     field_cell(u, "llm_calls"), field_cell(u, "tool_calls"),
                     field_cell(u, "agent_hops"), field_cell(u, "iterations"),
                     field_cell(u, "tokens"), field_cell(u, "cost"),
                     field_cell(u, "elapsed_seconds"));
  }
  if (const Json& m = member(e, "message"); m.is_string() && !m.get<std::string>().empty()) {
    s += ": " + m.get<std::string>();
  }
  return s;
}

std::string format_error(const Reply& reply) {
  std::string s = reply.error.value_or("error");
  std::string message = reply.message();
  std::vector<std::string> extra;
  if (reply.parameters.is_object()) {
    for (const auto& [k, v] : reply.parameters.items()) {
      if (k == "message") continue;
      extra.push_back(fmt::format("{}={}", k, cell(v)));
    }
  }
  if (!message.empty()) {
    s += ": " + message;
    // The reason code helps a script or a search in the journal; the rest is in --json.
    if (const Json& r = member(reply.parameters, "reason"); r.is_string())
      s += " (" + r.get<std::string>() + ")";
  } else if (!extra.empty()) {
    s += ": " + join(extra, " ");
  }
  return s;
}

// ---- budgetctl usage ---------------------------------------------------------------------------

namespace {

struct UsageSubcommand {
  std::string_view name;
  std::string_view method;
  // The positional arguments, in order, as parameter names.
  std::vector<std::string_view> positional;
  // key=value arguments: the key on the command line -> the parameter.
  std::vector<std::pair<std::string_view, std::string_view>> keys;
  std::string_view synopsis;  // for the error message
};

const std::vector<UsageSubcommand>& usage_subcommands() {
  static const std::vector<UsageSubcommand> kSubcommands = {
      {"summary", "Summary", {"start", "end"},
       {{"scope", "scope"}, {"by", "group_by"}, {"group_by", "group_by"}},
       "START END [scope=PATH] [by=GROUP]"},
      {"records", "Records", {},
       {{"resource", "resource_type"}, {"resource_type", "resource_type"}, {"process", "process"},
        {"agent", "agent"}, {"model", "model"}, {"thread", "thread"}, {"scope", "scope"},
        {"kind", "kind"}, {"since", "since"}, {"until", "until"}, {"limit", "limit"},
        {"cursor", "cursor"}},
       "[KEY=VALUE...]"},
      {"pricing", "Pricing", {}, {}, ""},
      {"stats", "Stats", {}, {}, ""},
      {"overview", "Overview", {}, {}, ""},
      {"threads", "Threads", {}, {{"limit", "limit"}}, "[limit=N]"},
      {"thread", "Thread", {"thread"}, {}, "ID"},
      {"agent", "Agent", {"agent"}, {}, "NAME"},
      {"model", "Model", {"model"}, {}, "NAME"},
      {"reset", "Reset", {}, {{"scope", "scope"}, {"process", "process"}, {"thread", "thread"}},
       "(scope=PATH | process=PID | thread=ID)"},
  };
  return kSubcommands;
}

// "a=1 b=2" of a quantity map ({"tokens_in": "1000", ...}), in key order.
std::string quantities_cell(const Json& quantity) {
  if (!quantity.is_object() || quantity.empty()) return "-";
  std::vector<std::string> parts;
  for (const auto& [k, v] : quantity.items()) parts.push_back(k + "=" + cell(v));
  return join(parts, " ");
}

// "" (usage without the label) shows as "-".
std::string key_cell(const Json& obj, std::string_view key) {
  std::string s = field_cell(obj, key);
  return s.empty() ? "-" : s;
}

std::string format_usage_summary(const Json& r) {
  std::string scope = field_cell(r, "scope");
  std::string s = fmt::format("usage {} .. {}, scope {}, by {}\n", field_cell(r, "start"),
                              field_cell(r, "end"), scope.empty() ? "/" : scope,
                              field_cell(r, "group_by"));
  const Json& groups = member(r, "usage");
  Table t;
  std::string head = field_cell(r, "group_by");
  std::transform(head.begin(), head.end(), head.begin(),
                 [](unsigned char c) { return static_cast<char>(std::toupper(c)); });
  t.header = {head, "QUANTITY", "COST", "RECORDS"};
  const bool by_resource = field_cell(r, "group_by") == "resource";
  for (const auto& g : groups.is_array() ? groups : Json::array()) {
    const Json& q = member(g, "quantity");
    // Grouped by resource, a group holds that one resource: its amount says it all.
    std::string quantity = by_resource && q.is_object() && q.size() == 1
                               ? cell(q.begin().value())
                               : quantities_cell(q);
    t.rows.push_back({key_cell(g, "key"), quantity, field_cell(g, "cost"), field_cell(g, "records")});
  }
  t.rows.push_back({"total", "", field_cell(r, "total_cost"), field_cell(r, "records")});
  return s + t.render();
}

std::string format_usage_records(const Json& r) {
  const Json& records = member(r, "records");
  std::string s;
  if (!records.is_array() || records.empty()) {
    s = "no records\n";
  } else {
    Table t;
    t.header = {"ID", "RECORDED", "KIND", "PROCESS", "THREAD", "SCOPE", "ITEMS", "COST", "NOTE"};
    for (const auto& rec : records) {
      std::vector<std::string> items;
      const Json& its = member(rec, "items");
      for (const auto& it : its.is_array() ? its : Json::array())
        items.push_back(field_cell(it, "resource") + "=" + field_cell(it, "quantity"));
      // An audit or outcome says what happened; a usage record says whose it was.
      std::vector<std::string> note;
      if (const Json& a = member(rec, "action"); a.is_string()) note.push_back(cell(a));
      if (const Json& d = member(rec, "detail"); d.is_string()) note.push_back(cell(d));
      if (note.empty()) {
        const Json& labels = member(rec, "labels");
        if (labels.is_object())
          for (const auto& [k, v] : labels.items()) note.push_back(k + "=" + cell(v));
      }
      t.rows.push_back({field_cell(rec, "id"), field_cell(rec, "recorded_at"),
                        field_cell(rec, "kind"), field_cell(rec, "process"),
                        field_cell(rec, "thread"), field_cell(rec, "scope"),
                        items.empty() ? "-" : join(items, " "), field_cell(rec, "total_cost"),
                        note.empty() ? "-" : join(note, " ")});
    }
    s = t.render();
  }
  if (const Json& c = member(r, "next_cursor"); c.is_string())
    s += fmt::format("more: budgetctl usage records cursor={} (with the same filters)\n",
                     c.get<std::string>());
  return s;
}

std::string format_usage_pricing(const Json& r) {
  std::string s;
  auto section = [&](Table t, std::string_view empty) {
    if (!s.empty()) s += "\n";
    s += t.rows.empty() ? std::string(empty) : t.render();
  };
  Table resources;
  resources.header = {"RESOURCE", "PRICE", "PER"};
  for (const auto& p : member(r, "resources").is_array() ? member(r, "resources") : Json::array()) {
    std::string size = field_cell(p, "unit_size");
    resources.rows.push_back({field_cell(p, "resource"), field_cell(p, "unit_cost"),
                              size == "1" ? field_cell(p, "unit") : size + " " + field_cell(p, "unit")});
  }
  section(std::move(resources), "no resource prices\n");
  Table models;
  models.header = {"MODEL", "INPUT/1K", "OUTPUT/1K"};
  for (const auto& p : member(r, "models").is_array() ? member(r, "models") : Json::array()) {
    models.rows.push_back(
        {field_cell(p, "model"), field_cell(p, "input_per_1k"), field_cell(p, "output_per_1k")});
  }
  section(std::move(models), "no model prices\n");
  Table actions;
  actions.header = {"ACTION", "TOKENS/1000 WORDS"};
  for (const auto& p : member(r, "actions").is_array() ? member(r, "actions") : Json::array())
    actions.rows.push_back({field_cell(p, "action"), field_cell(p, "tokens_per_1000_words")});
  section(std::move(actions), "no action prices\n");
  return s;
}

std::string format_usage_stats(const Json& r) {
  Table t;
  for (auto key : {"total_events", "approved", "denied", "partial", "pending"})
    t.rows.push_back({key == std::string_view("total_events") ? "events" : key, field_cell(r, key)});
  return t.render();
}

// A split of the overview (by_agent or by_model): LABEL TOKENS COST.
std::string token_split(const Json& r, std::string_view key, std::string_view label,
                        std::string_view header) {
  const Json& rows = member(r, key);
  if (!rows.is_array()) return "";
  if (rows.empty()) return fmt::format("\nno usage by {} in the ledger\n", label);
  Table t;
  t.header = {std::string(header), "TOKENS", "COST"};
  for (const auto& u : rows)
    t.rows.push_back({key_cell(u, label), field_cell(u, "tokens"), field_cell(u, "cost")});
  return "\n" + t.render();
}

std::string format_usage_overview(const Json& r) {
  Table t;
  t.rows.push_back({"tokens", fmt::format("{} ({} prompt, {} completion)", field_cell(r, "total_tokens"),
                                          field_cell(r, "prompt_tokens"),
                                          field_cell(r, "completion_tokens"))});
  t.rows.push_back({"requests", field_cell(r, "requests")});
  t.rows.push_back({"threads", field_cell(r, "threads")});
  std::string s = t.render();
  s += token_split(r, "by_agent", "agent", "AGENT");
  s += token_split(r, "by_model", "model", "MODEL");
  return s;
}

std::vector<std::string> thread_row(const Json& t) {
  return {field_cell(t, "thread"),       field_cell(t, "total_tokens"),
          field_cell(t, "prompt_tokens"), field_cell(t, "completion_tokens"),
          field_cell(t, "remaining"),     field_cell(t, "max_tokens"),
          field_cell(t, "request_count"), field_cell(t, "reserved"),
          field_cell(t, "process")};
}
const std::vector<std::string> kThreadHeader = {"THREAD",    "TOKENS",   "PROMPT",
                                                "COMPLETION", "REMAINING", "MAX",
                                                "REQUESTS",  "RESERVED", "PROCESS"};

std::string format_usage_threads(const Json& r) {
  const Json& threads = member(r, "threads");
  if (!threads.is_array() || threads.empty()) return "no threads\n";
  Table t;
  t.header = kThreadHeader;
  for (const auto& th : threads) t.rows.push_back(thread_row(th));
  std::string s = t.render();
  const Json& total = member(r, "total");
  if (total.is_number_unsigned() && total.get<uint64_t>() > threads.size())
    s += fmt::format("({} of {} threads shown)\n", threads.size(), total.get<uint64_t>());
  return s;
}

std::string format_usage_thread(const Json& r) {
  Table t;
  const std::vector<std::string> row = thread_row(r);
  for (std::size_t i = 0; i < row.size(); ++i) {
    std::string key = kThreadHeader[i];
    std::transform(key.begin(), key.end(), key.begin(),
                   [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    t.rows.push_back({key, row[i]});
  }
  return t.render();
}

// Agent or model: a head line, then one row per resource.
std::string format_label_usage(const Json& r, std::string_view label) {
  std::string s = fmt::format("{} {}: cost {}, {} tokens, {} records\n", label,
                              field_cell(r, label), field_cell(r, "cost"), field_cell(r, "tokens"),
                              field_cell(r, "records"));
  const Json& q = member(r, "quantity");
  if (!q.is_object() || q.empty()) return s;
  Table t;
  t.header = {"RESOURCE", "QUANTITY"};
  for (const auto& [k, v] : q.items()) t.rows.push_back({k, cell(v)});
  return s + t.render();
}

}  // namespace

std::expected<Request, std::string> usage_request(std::span<const std::string> args) {
  if (args.empty()) {
    return std::unexpected(std::string(
        "usage takes a SUBCOMMAND: summary, records, pricing, stats, overview, threads, thread, "
        "agent, model or reset"));
  }
  const std::string& name = args[0];
  const auto& subs = usage_subcommands();
  auto sub = std::find_if(subs.begin(), subs.end(), [&](const auto& s) { return s.name == name; });
  if (sub == subs.end()) return std::unexpected(fmt::format("unknown usage subcommand '{}'", name));
  auto synopsis = [&] {
    return fmt::format("usage {}{}{}", sub->name, sub->synopsis.empty() ? "" : " ", sub->synopsis);
  };

  Json params = Json::object();
  std::size_t positional = 0;
  for (const std::string& a : args.subspan(1)) {
    if (a.starts_with("--")) return std::unexpected(fmt::format("unknown option '{}'", a));
    // KEY=VALUE when KEY is one of the subcommand's; anything else is the next positional
    // argument (a thread id may hold a '=').
    const auto eq = a.find('=');
    const std::string_view key = std::string_view(a).substr(0, eq);
    auto known = eq == std::string::npos
                     ? sub->keys.end()
                     : std::find_if(sub->keys.begin(), sub->keys.end(),
                                    [&](const auto& k) { return k.first == key; });
    if (known == sub->keys.end()) {
      if (positional >= sub->positional.size()) {
        return std::unexpected(eq == std::string::npos
                                   ? fmt::format("unexpected argument '{}': {}", a, synopsis())
                                   : fmt::format("unknown key '{}': {}", key, synopsis()));
      }
      if (a.empty()) return std::unexpected(fmt::format("{} is empty", sub->positional[positional]));
      params[std::string(sub->positional[positional++])] = a;
      continue;
    }
    const std::string param(known->second);
    const std::string value = a.substr(eq + 1);
    if (params.contains(param)) return std::unexpected(fmt::format("{} is given twice", key));
    if (param == "limit") {
      auto n = parse_id(value, "limit");
      if (!n) return std::unexpected(n.error());
      params[param] = *n;
    } else {
      params[param] = value;
    }
  }
  if (positional < sub->positional.size())
    return std::unexpected(fmt::format("{} needs {}", sub->name, synopsis()));
  if (sub->name == "reset" && params.size() != 1)
    return std::unexpected(std::string("reset takes exactly one of scope=, process= or thread="));
  return make_request(std::string(kUsage) + std::string(sub->method), std::move(params));
}

std::string format_usage(std::string_view subcommand, const Json& reply) {
  if (subcommand == "summary") return format_usage_summary(reply);
  if (subcommand == "records") return format_usage_records(reply);
  if (subcommand == "pricing") return format_usage_pricing(reply);
  if (subcommand == "stats") return format_usage_stats(reply);
  if (subcommand == "overview") return format_usage_overview(reply);
  if (subcommand == "threads") return format_usage_threads(reply);
  if (subcommand == "thread") return format_usage_thread(reply);
  if (subcommand == "agent" || subcommand == "model") return format_label_usage(reply, subcommand);
  return reply.dump(2, ' ', false, Json::error_handler_t::replace) + "\n";
}

// ---- Running -----------------------------------------------------------------------------------

namespace {

std::string pretty(const Json& j) {
  return j.dump(2, ' ', false, Json::error_handler_t::replace) + "\n";
}
std::string compact(const Json& j) {
  return j.dump(-1, ' ', false, Json::error_handler_t::replace);
}

// Runs one request (every page of a paged one). A transport failure is the unexpected
// string; an error reply comes back as a Reply with its error set.
std::expected<Reply, std::string> execute(VarlinkClient& c, const Request& r,
                                          client::Timeout timeout) {
  if (r.paged_key.empty()) return c.call(r.method, r.params, timeout);
  constexpr uint64_t kPage = 1000;
  Json items = Json::array();
  uint64_t total = 0;
  for (uint64_t offset = 0;;) {
    Json params = r.params.is_object() ? r.params : Json::object();
    params["offset"] = offset;
    params["limit"] = kPage;
    auto reply = c.call(r.method, params, timeout);
    if (!reply || !reply->ok()) return reply;
    const Json& page = member(reply->parameters, r.paged_key);
    if (const Json& t = member(reply->parameters, "total"); t.is_number_unsigned())
      total = t.get<uint64_t>();
    if (!page.is_array() || page.empty()) break;
    for (const auto& item : page) items.push_back(item);
    offset += page.size();
    if (offset >= total) break;
  }
  Reply all;
  all.parameters = Json{{r.paged_key, std::move(items)}, {"total", total}};
  return all;
}

int report_error(const Invocation& inv, const Reply& reply, std::ostream& out, std::ostream& err) {
  if (inv.json)
    out << compact(Json{{"error", *reply.error}, {"parameters", reply.parameters}}) << "\n";
  err << "error: " << format_error(reply) << "\n";
  return kExitErrorReply;
}

int stream(const Invocation& inv, VarlinkClient& c, const Request& r, std::ostream& out,
           std::ostream& err) {
  std::optional<Reply> failed;
  auto done = c.call_more(
      r.method, r.params,
      [&](const Reply& reply, bool) {
        if (!reply.ok()) {
          failed = reply;
          return false;
        }
        if (inv.json || inv.command == "call") {
          out << compact(reply.parameters) << "\n";
        } else {
          out << format_event(member(reply.parameters, "event")) << "\n";
        }
        out.flush();
        return static_cast<bool>(out);
      },
      client::kNoTimeout);
  if (failed) return report_error(inv, *failed, out, err);
  if (!done) {
    err << "budgetctl: " << r.method << ": " << done.error() << "\n";
    return kExitUsage;
  }
  return kExitOk;
}

}  // namespace

int run(std::span<const std::string> argv, std::ostream& out, std::ostream& err) {
  auto inv = parse_command_line(argv);
  if (!inv) {
    err << "budgetctl: " << inv.error() << "\nTry 'budgetctl --help'.\n";
    return kExitUsage;
  }
  if (inv->help) {
    const CommandSpec* c = inv->command.empty() ? nullptr : find_command(inv->command);
    out << (c ? command_usage(*c) : usage_text());
    return kExitOk;
  }
  if (inv->command.empty()) {
    err << usage_text();
    return kExitUsage;
  }
  auto requests = build_requests(*inv);
  if (!requests) {
    err << "budgetctl " << inv->command << ": " << requests.error() << "\n\n"
        << command_usage(*find_command(inv->command));
    return kExitUsage;
  }

  const std::string path = client::resolve_socket_path(inv->socket);
  auto conn = VarlinkClient::connect(path, inv->timeout);
  if (!conn) {
    err << "budgetctl: " << conn.error() << "\n";
    if (conn.error().ends_with(std::system_category().message(ENOENT)) ||
        conn.error().ends_with(std::system_category().message(ECONNREFUSED))) {
      err << "(is budgetd running? --socket PATH or $BUDGETD_SOCKET names its socket)\n";
    }
    return kExitUsage;
  }
  VarlinkClient& c = *conn;

  const Request& first = requests->front();
  if (first.more) return stream(*inv, c, first, out, err);
  if (first.oneway) {
    if (auto s = c.send_oneway(first.method, first.params, inv->timeout); !s) {
      err << "budgetctl: " << first.method << ": " << s.error() << "\n";
      return kExitUsage;
    }
    return kExitOk;
  }

  std::vector<Json> results;
  for (const auto& r : *requests) {
    auto reply = execute(c, r, inv->timeout);
    if (!reply) {
      err << "budgetctl: " << r.method << ": " << reply.error() << "\n";
      return kExitUsage;
    }
    if (!reply->ok()) return report_error(*inv, *reply, out, err);
    results.push_back(std::move(reply->parameters));
  }

  const std::string& cmd = inv->command;
  if (inv->json || cmd == "call") {
    if (cmd == "status") {
      Json merged = results[0];
      for (auto& [k, v] : results[1].items()) merged[k] = v;
      out << pretty(merged);
    } else {
      out << pretty(results[0]);
    }
    return kExitOk;
  }
  const Json& r = results[0];
  if (cmd == "status") {
    out << format_status(results[0], results[1]);
  } else if (cmd == "ps") {
    out << format_processes(r);
  } else if (cmd == "scopes") {
    out << format_scopes(r);
  } else if (cmd == "scope") {
    out << format_scope(member(r, "scope"));
  } else if (cmd == "templates") {
    const Json& ts = member(r, "templates");
    if (!ts.is_array() || ts.empty()) out << "no plans or tiers\n";
    bool first_one = true;
    for (const auto& t : ts.is_array() ? ts : Json::array()) {
      if (!first_one) out << "\n";
      out << format_template(t);
      first_one = false;
    }
  } else if (cmd == "pending") {
    out << format_pending(r);
  } else if (cmd == "adjust") {
    out << "process " << inv->args[0] << ": " << format_quota(r);
  } else if (cmd == "set-limits") {
    if (member(r, "scope").is_object()) {
      out << format_scope(member(r, "scope"));
    } else if (member(r, "template").is_object()) {
      out << format_template(member(r, "template"));
    } else {
      out << "limits set\n";
    }
  } else if (cmd == "approve" || cmd == "deny") {
    out << format_decision(r, inv->args[0]);
  } else if (cmd == "pause") {
    out << "paused " << inv->args[0] << "\n";
  } else if (cmd == "resume") {
    out << "resumed " << inv->args[0] << "\n";
  } else if (cmd == "reload") {
    out << "configuration reloaded\n";
  } else if (cmd == "usage") {
    if (inv->args[0] == "reset") {
      out << "usage reset: " << inv->args[1] << "\n";
    } else {
      out << format_usage(inv->args[0], r);
    }
  }
  return kExitOk;
}

}  // namespace budgetd::cli
