// budgetctl's logic, kept out of main so tests can drive it: the command line, the
// key=value arguments turned into io.budgetd.Admin parameters, the tables, and the run of a
// whole invocation against a socket.
#pragma once

#include <chrono>
#include <cstdint>
#include <expected>
#include <iosfwd>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "clients/cpp/varlink_client.h"

namespace budgetd::cli {

using client::Json;

inline constexpr std::string_view kAdmin = "io.budgetd.Admin.";

// Exit statuses.
inline constexpr int kExitOk = 0;
inline constexpr int kExitErrorReply = 1;  // the daemon answered with an error
inline constexpr int kExitUsage = 2;       // bad command line, or the socket failed

// ---- The command line ------------------------------------------------------------------

struct Invocation {
  std::string socket;  // --socket, "" = $BUDGETD_SOCKET or the default
  bool json = false;   // --json
  bool help = false;   // --help, -h, or the `help` command
  std::chrono::milliseconds timeout{std::chrono::seconds(30)};  // --timeout SECONDS
  std::string command;                                          // "" when none was given
  std::vector<std::string> args;  // the command's own arguments and options
};

// Global options may come before or after the command (until a "--"). Fails on a
// missing option value or an unknown command.
std::expected<Invocation, std::string> parse_command_line(std::span<const std::string> argv);

struct CommandSpec {
  std::string_view name;
  std::string_view synopsis;  // the arguments after the name
  std::string_view summary;   // one line
  std::string_view methods;   // the io.budgetd.Admin methods it calls, ", "-separated
  std::string_view details;   // the rest of `budgetctl COMMAND --help`
};
std::span<const CommandSpec> commands();
const CommandSpec* find_command(std::string_view name);
std::string usage_text();                         // budgetctl --help
std::string command_usage(const CommandSpec& c);  // budgetctl COMMAND --help

// ---- Arguments to parameters -----------------------------------------------------------

// "key=value" (the value may be empty, the key may not).
std::expected<std::pair<std::string, std::string>, std::string> split_key_value(
    std::string_view arg);

// adjust PID key=value…: a QuotaInput object. Keys are QuotaInput's field names, or the
// short forms llm_calls (max_llm_calls), tokens, cost, …, timeout (timeout_seconds),
// soft_timeout, kill_grace. Values travel as strings ("100", "unlimited", "terminate").
std::expected<Json, std::string> quota_input_from_args(std::span<const std::string> kvs);

// set-limits: the SetLimits parameters (without path/template). RESOURCE=hard,
// RESOURCE.hard=, RESOURCE.soft=, RESOURCE.approval=, plan=, tier=, reset=, clear=BOOL.
std::expected<Json, std::string> set_limits_params_from_args(std::span<const std::string> kvs);

// One call to make.
struct Request {
  std::string method;
  Json params = Json::object();
  bool more = false;    // a streaming call (Watch)
  bool oneway = false;  // no reply expected
  // Non-empty for ListProcesses/ListScopes: fetch every page (offset/limit), and
  // concatenate this array of each page into one reply {KEY: [...], "total": N}.
  std::string paged_key{};
};

// The calls an invocation makes, in order (status makes two). Fails with a usage message.
std::expected<std::vector<Request>, std::string> build_requests(const Invocation& inv);

// ---- Output ------------------------------------------------------------------------------

// Left-aligned columns separated by two spaces; no trailing blanks.
struct Table {
  std::vector<std::string> header;
  std::vector<std::vector<std::string>> rows;
  std::string render() const;
};

// A JSON value as a table cell: strings unquoted, null/absent "-".
std::string cell(const Json& v);
// A field of an object as a cell ("-" when absent).
std::string field_cell(const Json& obj, std::string_view key);
// A ResourceUse as "used/limit (pct%)"; just "used" when the limit is unlimited. Elapsed
// seconds are shown with one decimal and an "s".
std::string use_cell(const Json& use);
// 3725 -> "1h02m05s"; 86400 -> "1d00h00m00s"; 42 -> "42s".
std::string format_duration(int64_t seconds);

std::string format_processes(const Json& list_processes_reply);
std::string format_status(const Json& stats_reply, const Json& system_usage_reply);
std::string format_scopes(const Json& list_scopes_reply);
std::string format_scope(const Json& scope);
std::string format_template(const Json& tmpl);
std::string format_pending(const Json& list_pending_reply);
std::string format_quota(const Json& adjust_quota_reply);
std::string format_decision(const Json& consume_reply, std::string_view request_id);
// One Watch event (the reply's "event" object) as one line.
std::string format_event(const Json& event);
// "NAME: message" for an error reply (the parameters spelled out when there is no
// message).
std::string format_error(const client::Reply& reply);

// ---- budgetctl usage ---------------------------------------------------------------------------

inline constexpr std::string_view kUsage = "io.budgetd.Usage.";

// budgetctl usage SUBCOMMAND [ARGS...] (the arguments after "usage"): the one
// io.budgetd.Usage call it makes. Fails with a usage message.
std::expected<Request, std::string> usage_request(std::span<const std::string> args);
// The reply of `budgetctl usage SUBCOMMAND` as tables.
std::string format_usage(std::string_view subcommand, const Json& reply);

// ---- Running -------------------------------------------------------------------------------

// Runs budgetctl with `argv` (without the program name). Returns the exit status.
int run(std::span<const std::string> argv, std::ostream& out, std::ostream& err);

}  // namespace budgetd::cli
