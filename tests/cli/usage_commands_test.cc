// budgetctl usage: each subcommand's call (arguments to io.budgetd.Usage parameters), its
// tables, and whole invocations (tables, --json, error replies) against a fake daemon on a
// temporary Unix socket.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <functional>
#include <mutex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "cli/budgetctl_args.h"
#include "tests/cli/fake_server.h"

namespace budgetd::cli {
namespace {

std::vector<std::string> v(std::initializer_list<std::string> l) { return l; }

struct Run {
  int status;
  std::string out, err;
};
Run run_cli(const FakeServer& d, std::vector<std::string> args) {
  args.insert(args.begin(), {"--socket", d.path()});
  std::ostringstream out, err;
  int st = run(args, out, err);
  return {st, out.str(), err.str()};
}

Json ok(Json params) { return Json{{"parameters", std::move(params)}}; }

// Replies in io.budgetd.Usage's shapes.
const Json kSummary = Json::parse(R"({
  "start": "2024-01-01T00:00:00Z", "end": "2024-02-01T00:00:00Z", "scope": "", "group_by": "model",
  "usage": [
    {"key": "gpt-4", "quantity": {"tokens_in": "1000", "tokens_out": "500"}, "cost": "0.09", "records": 3},
    {"key": "", "quantity": {"agent_execution": "2"}, "cost": "0.02", "records": 2}],
  "total_cost": "0.11", "records": 5})");

const Json kRecords = Json::parse(R"({
  "records": [
    {"id": "0f8fad5b-d9cb-469f-a165-70867728950e", "kind": "usage",
     "recorded_at": "2024-01-05T09:30:00Z", "uid": 1000, "pid": 4242,
     "process": "4242", "thread": "t-1", "scope": "org/acme",
     "labels": {"agent": "planner", "model": "gpt-4"},
     "items": [{"resource": "tokens_in", "quantity": "1", "unit": "token",
                "unit_cost": "0.002", "total_cost": "0.000002"}],
     "total_cost": "0.000002"},
    {"id": "1f8fad5b-d9cb-469f-a165-70867728950e", "kind": "audit",
     "recorded_at": "2024-01-04T00:00:00Z", "uid": 0, "pid": 1, "scope": "org",
     "labels": {}, "items": [], "total_cost": "0", "action": "Reset", "detail": "{\"scope\":\"org\"}"}],
  "next_cursor": "c-2"})");

const Json kPricing = Json::parse(R"({
  "resources": [
    {"resource": "agent_execution", "unit": "count", "unit_size": "1", "unit_cost": "0.01"},
    {"resource": "token", "unit": "token", "unit_size": "1000", "unit_cost": "0.002"}],
  "models": [{"model": "gpt-4", "input_per_1k": "0.03", "output_per_1k": "0.06"}],
  "actions": [{"action": "summarize", "tokens_per_1000_words": "2"},
              {"action": "translate", "tokens_per_1000_words": "5"}]})");

const Json kOverview = Json::parse(R"({
  "total_tokens": 163, "prompt_tokens": 111, "completion_tokens": 52, "requests": 3, "threads": 2,
  "by_agent": [{"agent": "planner", "tokens": 1500, "cost": "0.09"}, {"agent": "", "tokens": 0, "cost": "0.02"}],
  "by_model": []})");

const Json kThreads = Json::parse(R"({
  "threads": [
    {"thread": "t-2", "prompt_tokens": 30, "completion_tokens": 5, "total_tokens": 35, "remaining": 99965,
     "max_tokens": 100000, "request_count": 1, "reserved": 0, "process": "4242"},
    {"thread": "t-1", "prompt_tokens": 10, "completion_tokens": 0, "total_tokens": 10, "remaining": 99990,
     "max_tokens": 100000, "request_count": 2, "reserved": 5}],
  "total": 3})");

Json usage_handler(const Json& call) {
  const std::string m = call["method"];
  const Json p = call.contains("parameters") ? call["parameters"] : Json::object();
  if (m == "io.budgetd.Usage.Summary") return ok(kSummary);
  if (m == "io.budgetd.Usage.Records") return ok(kRecords);
  if (m == "io.budgetd.Usage.Pricing") return ok(kPricing);
  if (m == "io.budgetd.Usage.Stats")
    return ok({{"total_events", 7}, {"approved", 4}, {"denied", 2}, {"partial", 1}, {"pending", 0}});
  if (m == "io.budgetd.Usage.Overview") return ok(kOverview);
  if (m == "io.budgetd.Usage.Threads") return ok(kThreads);
  if (m == "io.budgetd.Usage.Thread") {
    if (p.value("thread", "") != "t-1") {
      return {{"error", "io.budgetd.ThreadNotFound"},
              {"parameters", {{"code", "unknown_thread"}, {"message", "No such thread: nope."}}}};
    }
    Json t = kThreads["threads"][1];
    return ok(t);
  }
  if (m == "io.budgetd.Usage.Agent") {
    return ok({{"agent", p["agent"]}, {"quantity", {{"tokens_in", "1000"}, {"llm_calls", "3"}}},
               {"tokens", 1000}, {"cost", "0.03"}, {"records", 3}});
  }
  if (m == "io.budgetd.Usage.Model") {
    return {{"error", "io.budgetd.LedgerUnavailable"},
            {"parameters", {{"message", "budgetd runs without a store, so it keeps no ledger"}}}};
  }
  if (m == "io.budgetd.Usage.Reset") return ok(Json::object());
  return {{"error", "org.varlink.service.MethodNotFound"}, {"parameters", {{"method", m}}}};
}

// ---- Arguments to calls -------------------------------------------------------------------------

Request usage_call(std::initializer_list<std::string> args) {
  std::vector<std::string> a = args;
  auto r = usage_request(a);
  EXPECT_TRUE(r) << (r ? "" : r.error());
  return r ? *r : Request{};
}

std::string usage_error(std::initializer_list<std::string> args) {
  std::vector<std::string> a = args;
  auto r = usage_request(a);
  EXPECT_FALSE(r) << "accepted: " << (r ? r->params.dump() : "");
  return r ? "" : r.error();
}

TEST(BudgetctlUsageRequests, EachSubcommandCallsItsMethod) {
  Request r = usage_call({"summary", "2024-01-01", "2024-01-31", "by=model", "scope=org/acme"});
  EXPECT_EQ(r.method, "io.budgetd.Usage.Summary");
  EXPECT_EQ(r.params, (Json{{"start", "2024-01-01"}, {"end", "2024-01-31"}, {"group_by", "model"},
                            {"scope", "org/acme"}}));
  EXPECT_EQ(usage_call({"summary", "a", "b", "group_by=agent"}).params["group_by"], "agent");

  r = usage_call({"records", "resource=token", "process=4242", "agent=planner", "model=gpt-4",
                  "thread=t-1", "scope=org", "kind=audit", "since=2024-01-01", "until=2024-01-31",
                  "limit=50", "cursor=c-2"});
  EXPECT_EQ(r.method, "io.budgetd.Usage.Records");
  EXPECT_EQ(r.params, (Json{{"resource_type", "token"}, {"process", "4242"}, {"agent", "planner"},
                            {"model", "gpt-4"}, {"thread", "t-1"}, {"scope", "org"}, {"kind", "audit"},
                            {"since", "2024-01-01"}, {"until", "2024-01-31"}, {"limit", 50},
                            {"cursor", "c-2"}}));
  EXPECT_EQ(usage_call({"records"}).params, Json::object());

  for (auto [sub, method] : {std::pair{"pricing", "Pricing"}, {"stats", "Stats"}, {"overview", "Overview"},
                             {"threads", "Threads"}}) {
    r = usage_call({sub});
    EXPECT_EQ(r.method, "io.budgetd.Usage." + std::string(method));
    EXPECT_EQ(r.params, Json::object());
  }
  EXPECT_EQ(usage_call({"threads", "limit=5"}).params, (Json{{"limit", 5}}));
  EXPECT_EQ(usage_call({"thread", "t-1"}).params, (Json{{"thread", "t-1"}}));
  EXPECT_EQ(usage_call({"thread", "a=b"}).params, (Json{{"thread", "a=b"}}));  // ids may hold '='
  EXPECT_EQ(usage_call({"agent", "planner"}).method, "io.budgetd.Usage.Agent");
  EXPECT_EQ(usage_call({"model", "gpt-4"}).params, (Json{{"model", "gpt-4"}}));
  r = usage_call({"reset", "scope=org/acme"});
  EXPECT_EQ(r.method, "io.budgetd.Usage.Reset");
  EXPECT_EQ(r.params, (Json{{"scope", "org/acme"}}));
  EXPECT_EQ(usage_call({"reset", "thread=t-1"}).params, (Json{{"thread", "t-1"}}));
}

TEST(BudgetctlUsageRequests, UsageErrors) {
  EXPECT_NE(usage_error({}).find("SUBCOMMAND"), std::string::npos);
  EXPECT_NE(usage_error({"nope"}).find("unknown usage subcommand 'nope'"), std::string::npos);
  EXPECT_NE(usage_error({"summary", "2024-01-01"}).find("summary needs usage summary START END"),
            std::string::npos);
  EXPECT_NE(usage_error({"summary", "a", "b", "colour=red"}).find("unknown key 'colour'"),
            std::string::npos);
  EXPECT_NE(usage_error({"summary", "a", "b", "c"}).find("unexpected argument 'c'"), std::string::npos);
  EXPECT_NE(usage_error({"summary", "a", "b", "by=x", "by=y"}).find("given twice"), std::string::npos);
  EXPECT_NE(usage_error({"records", "limit=ten"}).find("limit must be a non-negative integer"),
            std::string::npos);
  EXPECT_NE(usage_error({"records", "--all"}).find("unknown option '--all'"), std::string::npos);
  EXPECT_NE(usage_error({"stats", "x"}).find("unexpected argument"), std::string::npos);
  EXPECT_NE(usage_error({"thread"}).find("needs"), std::string::npos);
  EXPECT_NE(usage_error({"thread", ""}).find("thread is empty"), std::string::npos);
  EXPECT_NE(usage_error({"reset"}).find("exactly one"), std::string::npos);
  EXPECT_NE(usage_error({"reset", "scope=a", "thread=b"}).find("exactly one"), std::string::npos);
}

// ---- Tables -----------------------------------------------------------------------------------------

TEST(BudgetctlUsageFormat, Summary) {
  EXPECT_EQ(format_usage("summary", kSummary),
            "usage 2024-01-01T00:00:00Z .. 2024-02-01T00:00:00Z, scope /, by model\n"
            "MODEL  QUANTITY                       COST  RECORDS\n"
            "gpt-4  tokens_in=1000 tokens_out=500  0.09  3\n"
            "-      agent_execution=2              0.02  2\n"
            "total                                 0.11  5\n");
  // Grouped by resource, each row's quantity is that resource's.
  Json by_resource = Json::parse(R"({"start": "s", "end": "e", "scope": "org", "group_by": "resource",
    "usage": [{"key": "token", "quantity": {"token": "250000"}, "cost": "0.5", "records": 9}],
    "total_cost": "0.5", "records": 9})");
  EXPECT_EQ(format_usage("summary", by_resource),
            "usage s .. e, scope org, by resource\n"
            "RESOURCE  QUANTITY  COST  RECORDS\n"
            "token     250000    0.5   9\n"
            "total               0.5   9\n");
}

TEST(BudgetctlUsageFormat, RecordsWithTheNextPage) {
  EXPECT_EQ(format_usage("records", kRecords),
            "ID                                    RECORDED              KIND   PROCESS  THREAD  SCOPE     "
            "ITEMS        COST      NOTE\n"
            "0f8fad5b-d9cb-469f-a165-70867728950e  2024-01-05T09:30:00Z  usage  4242     t-1     org/acme  "
            "tokens_in=1  0.000002  agent=planner model=gpt-4\n"
            "1f8fad5b-d9cb-469f-a165-70867728950e  2024-01-04T00:00:00Z  audit  -        -       org       "
            "-            0         Reset {\"scope\":\"org\"}\n"
            "more: budgetctl usage records cursor=c-2 (with the same filters)\n");
  EXPECT_EQ(format_usage("records", Json{{"records", Json::array()}}), "no records\n");
}

TEST(BudgetctlUsageFormat, PricingStatsOverview) {
  EXPECT_EQ(format_usage("pricing", kPricing),
            "RESOURCE         PRICE  PER\n"
            "agent_execution  0.01   count\n"
            "token            0.002  1000 token\n"
            "\n"
            "MODEL  INPUT/1K  OUTPUT/1K\n"
            "gpt-4  0.03      0.06\n"
            "\n"
            "ACTION     TOKENS/1000 WORDS\n"
            "summarize  2\n"
            "translate  5\n");
  EXPECT_EQ(format_usage("pricing", Json::parse(R"({"resources": [], "models": [], "actions": []})")),
            "no resource prices\n\nno model prices\n\nno action prices\n");
  EXPECT_EQ(format_usage("stats", Json{{"total_events", 7}, {"approved", 4}, {"denied", 2},
                                       {"partial", 1}, {"pending", 0}}),
            "events    7\napproved  4\ndenied    2\npartial   1\npending   0\n");
  EXPECT_EQ(format_usage("overview", kOverview),
            "tokens    163 (111 prompt, 52 completion)\n"
            "requests  3\n"
            "threads   2\n"
            "\n"
            "AGENT    TOKENS  COST\n"
            "planner  1500    0.09\n"
            "-        0       0.02\n"
            "\n"
            "no usage by model in the ledger\n");
  // Without a store the splits are absent.
  Json bare = kOverview;
  bare.erase("by_agent");
  bare.erase("by_model");
  EXPECT_EQ(format_usage("overview", bare),
            "tokens    163 (111 prompt, 52 completion)\nrequests  3\nthreads   2\n");
}

TEST(BudgetctlUsageFormat, ThreadsThreadAgent) {
  EXPECT_EQ(format_usage("threads", kThreads),
            "THREAD  TOKENS  PROMPT  COMPLETION  REMAINING  MAX     REQUESTS  RESERVED  PROCESS\n"
            "t-2     35      30      5           99965      100000  1         0         4242\n"
            "t-1     10      10      0           99990      100000  2         5         -\n"
            "(2 of 3 threads shown)\n");
  EXPECT_EQ(format_usage("threads", Json{{"threads", Json::array()}, {"total", 0}}), "no threads\n");
  EXPECT_EQ(format_usage("thread", kThreads["threads"][0]),
            "thread      t-2\n"
            "tokens      35\n"
            "prompt      30\n"
            "completion  5\n"
            "remaining   99965\n"
            "max         100000\n"
            "requests    1\n"
            "reserved    0\n"
            "process     4242\n");
  Json agent = Json::parse(R"({"agent": "planner", "quantity": {"llm_calls": "3", "tokens_in": "1000"},
    "tokens": 1000, "cost": "0.03", "records": 3})");
  EXPECT_EQ(format_usage("agent", agent),
            "agent planner: cost 0.03, 1000 tokens, 3 records\n"
            "RESOURCE   QUANTITY\n"
            "llm_calls  3\n"
            "tokens_in  1000\n");
  Json none = Json::parse(R"({"model": "m", "quantity": {}, "tokens": 0, "cost": "0", "records": 0})");
  EXPECT_EQ(format_usage("model", none), "model m: cost 0, 0 tokens, 0 records\n");
}

// ---- Whole invocations ----------------------------------------------------------------------------

TEST(BudgetctlUsageRun, TablesAndJson) {
  FakeServer d([](const Json& call) { return std::vector<Json>{usage_handler(call)}; });
  auto r = run_cli(d, {"usage", "summary", "2024-01-01", "2024-01-31", "by=model"});
  EXPECT_EQ(r.status, kExitOk) << r.err;
  EXPECT_EQ(r.out, format_usage("summary", kSummary));
  EXPECT_EQ(d.calls().back(),
            (Json{{"method", "io.budgetd.Usage.Summary"},
                  {"parameters", {{"start", "2024-01-01"}, {"end", "2024-01-31"}, {"group_by", "model"}}}}));

  // --json prints the reply's parameters, before or after the command.
  for (auto args : {v({"--json", "usage", "records", "limit=2"}), v({"usage", "records", "limit=2", "--json"})}) {
    r = run_cli(d, args);
    EXPECT_EQ(r.status, kExitOk) << r.err;
    EXPECT_EQ(Json::parse(r.out), kRecords);
  }
  EXPECT_EQ(d.calls().back()["parameters"], (Json{{"limit", 2}}));

  r = run_cli(d, {"usage", "stats"});
  EXPECT_EQ(r.out, "events    7\napproved  4\ndenied    2\npartial   1\npending   0\n");
  r = run_cli(d, {"usage", "threads"});
  EXPECT_EQ(r.out, format_usage("threads", kThreads));
  r = run_cli(d, {"usage", "thread", "t-1"});
  EXPECT_EQ(r.status, kExitOk);
  EXPECT_NE(r.out.find("thread      t-1\n"), std::string::npos) << r.out;
  r = run_cli(d, {"usage", "agent", "planner"});
  EXPECT_EQ(r.out.substr(0, r.out.find('\n')), "agent planner: cost 0.03, 1000 tokens, 3 records");
  r = run_cli(d, {"usage", "pricing", "--json"});
  EXPECT_EQ(Json::parse(r.out), kPricing);
  r = run_cli(d, {"usage", "reset", "thread=t-1"});
  EXPECT_EQ(r.status, kExitOk);
  EXPECT_EQ(r.out, "usage reset: thread=t-1\n");
  EXPECT_EQ(d.calls().back()["parameters"], (Json{{"thread", "t-1"}}));
}

TEST(BudgetctlUsageRun, ErrorRepliesExitOne) {
  FakeServer d([](const Json& call) { return std::vector<Json>{usage_handler(call)}; });
  auto r = run_cli(d, {"usage", "thread", "nope"});
  EXPECT_EQ(r.status, kExitErrorReply);
  EXPECT_EQ(r.out, "");
  EXPECT_EQ(r.err, "error: io.budgetd.ThreadNotFound: No such thread: nope.\n");

  r = run_cli(d, {"--json", "usage", "model", "gpt-4"});
  EXPECT_EQ(r.status, kExitErrorReply);
  EXPECT_EQ(Json::parse(r.out)["error"], "io.budgetd.LedgerUnavailable");
  EXPECT_EQ(r.err, "error: io.budgetd.LedgerUnavailable: budgetd runs without a store, so it keeps no ledger\n");

  // A bad command line never reaches the daemon.
  const std::size_t calls = d.calls().size();
  r = run_cli(d, {"usage", "summary"});
  EXPECT_EQ(r.status, kExitUsage);
  EXPECT_NE(r.err.find("budgetctl usage: summary needs usage summary START END"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("Usage: budgetctl [OPTIONS] usage SUBCOMMAND"), std::string::npos) << r.err;
  EXPECT_EQ(d.calls().size(), calls);
}

TEST(BudgetctlUsageRun, Help) {
  std::ostringstream out, err;
  EXPECT_EQ(run(v({"usage", "--help"}), out, err), kExitOk);
  for (auto sub : {"summary", "records", "pricing", "stats", "overview", "threads", "thread", "agent",
                   "model", "reset"})
    EXPECT_NE(out.str().find("  " + std::string(sub)), std::string::npos) << sub;
  EXPECT_NE(usage_text().find("  usage SUBCOMMAND"), std::string::npos);
  EXPECT_NE(usage_text().find("io.budgetd.Usage"), std::string::npos);
}

}  // namespace
}  // namespace budgetd::cli
