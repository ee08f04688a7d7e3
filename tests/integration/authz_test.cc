// Who may do what (DESIGN.md "Who may do what", issue 4 section 3), proven against the real
// daemon with clients forked under other uids. The test runs as root (it is the operator);
// each agent is a child process that takes another uid, gid and groups, connects, calls,
// and sends what it saw back through a pipe, where the test asserts on it. An agent stays
// alive after reporting (so its pid and its descendants stay valid and tracked) until the
// test lets it go, which is when the test checks, as root, that nothing changed.
#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <functional>
#include <set>
#include <string>
#include <vector>

#include "tests/integration/daemon_fixture.h"

namespace budgetd::integration {
namespace {

using Clock = std::chrono::steady_clock;

constexpr uid_t kNobody = 65534;
constexpr gid_t kNogroup = 65534;
constexpr uid_t kUser = 1000;
constexpr gid_t kUserGroup = 1000;
// Debian's adm group: base-passwd fixes its gid, so it exists in every Debian root.
constexpr gid_t kAdm = 4;
constexpr std::string_view kAdmName = "adm";

constexpr std::string_view kDenied = "io.budgetd.PermissionDenied";
constexpr std::string_view kQuotaExceeded = "io.budgetd.QuotaExceeded";

// Everyone may connect: these tests are about the daemon's checks, not the file mode.
constexpr std::string_view kOpenSocket = "[socket]\nmode = \"0666\"\n";

struct Identity {
  uid_t uid;
  gid_t gid;
  std::vector<gid_t> groups = {};
};

// A name no other test (or an earlier run) uses.
std::string unique_id(std::string_view what) {
  return std::string(what) + "-" + std::to_string(getpid()) + "-" +
         std::to_string(Clock::now().time_since_epoch().count() % 1'000'000'007);
}

// What one call gave, as JSON the child can send: {"error": NAME or null, "parameters": {...}}
// or {"transport": TEXT}.
Json outcome(VarlinkClient& c, std::string_view method, const Json& params,
             client::CallFlags flags = {}) {
  std::expected<Reply, std::string> r;
  if (flags.more) {
    if (auto s = c.send_call(method, params, flags, kWaitTimeout); !s)
      return Json{{"transport", s.error()}};
    r = c.read_reply(kWaitTimeout);
  } else {
    r = c.call(method, params, kWaitTimeout);
  }
  if (!r) return Json{{"transport", r.error()}};
  Json o{{"parameters", r->parameters}};
  o["error"] = r->error ? Json(*r->error) : Json(nullptr);
  return o;
}

// The error name of an outcome, "" for a success, "transport: ..." when there was no reply.
std::string error_of(const Json& o) {
  if (!o.is_object()) return "no outcome: " + o.dump();
  if (o.contains("transport")) return "transport: " + o["transport"].get<std::string>();
  return o.value("error", Json(nullptr)).is_string() ? o["error"].get<std::string>() : "";
}

// What the daemon says about an outcome, for failure messages.
std::string show(const Json& o) { return o.dump(); }

// ---- Processes the agents fork ---------------------------------------------------------

// Pids of the sleepers the current process forked; they are killed and reaped before it exits.
std::vector<pid_t>& sleepers() {
  static std::vector<pid_t> pids;
  return pids;
}

// Forks a chain of `depth` processes that only pause: the first is a child of the caller,
// each next one a child of the previous. Returns their pids, first first. They die with the
// caller (PR_SET_PDEATHSIG), and the caller kills the first in kill_sleepers().
std::vector<pid_t> spawn_sleepers(int depth = 1) {
  int fds[2];
  if (pipe2(fds, O_CLOEXEC) != 0) return {};
  pid_t first = fork();
  if (first < 0) return {};
  if (first == 0) {
    // Only the pid pipe: inherited pipes and sockets of the caller's would outlive it here.
    close(fds[0]);
    if (fds[1] > 3) close_range(3, static_cast<unsigned>(fds[1]) - 1, 0);
    close_range(static_cast<unsigned>(fds[1]) + 1, ~0U, 0);
    for (int level = 1;; ++level) {
      prctl(PR_SET_PDEATHSIG, SIGKILL);
      pid_t self = getpid();
      (void)!write(fds[1], &self, sizeof self);
      if (level == depth) break;
      pid_t next = fork();
      if (next < 0) break;
      if (next > 0) break;  // the parent pauses; the child goes on to the next level
    }
    close(fds[1]);
    for (;;) pause();
  }
  close(fds[1]);
  std::vector<pid_t> pids;
  pid_t p = 0;
  while (static_cast<int>(pids.size()) < depth && read(fds[0], &p, sizeof p) == sizeof p)
    pids.push_back(p);
  close(fds[0]);
  sleepers().push_back(first);
  return pids;
}

void kill_sleepers() {
  for (pid_t p : sleepers()) {
    kill(p, SIGKILL);
    waitpid(p, nullptr, 0);
  }
  sleepers().clear();
}

// ---- An agent under another identity ---------------------------------------------------

// A client process under `id`. The child takes the identity, waits for go() when asked to,
// connects to `socket`, runs `body` and sends the JSON it returns to the test; then it
// stays alive until finish() (or the destructor), so its pid and its sleepers stay valid.
// A failed connect is reported as {"connect_error": TEXT} without running `body`.
class Agent {
 public:
  using Body = std::function<Json(VarlinkClient&)>;

  Agent(Identity id, const std::string& socket, Body body, bool wait_for_go = false) {
    int result[2], gate[2];
    if (pipe2(result, O_CLOEXEC) != 0 || pipe2(gate, O_CLOEXEC) != 0) {
      ADD_FAILURE() << "pipe: " << std::strerror(errno);
      return;
    }
    std::fflush(nullptr);
    const pid_t parent = getpid();
    pid_ = fork();
    if (pid_ < 0) {
      ADD_FAILURE() << "fork: " << std::strerror(errno);
      return;
    }
    if (pid_ == 0) {
      close(result[0]);
      close(gate[1]);
      prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (getppid() != parent) _exit(127);
      sleepers().clear();  // the test's own, not this agent's to kill
      Json out;
      if (setgroups(id.groups.size(), id.groups.data()) != 0 || setgid(id.gid) != 0 ||
          setuid(id.uid) != 0) {
        out = Json{{"harness", std::string("cannot take the identity: ") + std::strerror(errno)}};
      } else {
        char go = 0;
        if (wait_for_go && read(gate[0], &go, 1) != 1) _exit(3);
        try {
          auto c = VarlinkClient::connect(socket, Ms{5000});
          if (!c)
            out = Json{{"connect_error", c.error()}};
          else
            out = body(*c);
        } catch (const std::exception& e) {
          out = Json{{"harness", std::string("exception: ") + e.what()}};
        }
      }
      std::string text = out.dump();
      for (std::size_t off = 0; off < text.size();) {
        ssize_t n = write(result[1], text.data() + off, text.size() - off);
        if (n <= 0) _exit(4);
        off += static_cast<std::size_t>(n);
      }
      close(result[1]);
      char b;
      while (read(gate[0], &b, 1) > 0 || errno == EINTR) {
      }
      kill_sleepers();
      _exit(0);
    }
    close(result[1]);
    close(gate[0]);
    result_fd_ = result[0];
    gate_fd_ = gate[1];
  }

  ~Agent() {
    if (pid_ <= 0) return;
    if (gate_fd_ >= 0) close(gate_fd_);
    if (result_fd_ >= 0) close(result_fd_);
    if (!reaped_) {
      int status = 0;
      if (!wait_until([&] { return waitpid(pid_, &status, WNOHANG) == pid_; }, kWaitTimeout,
                      Ms{1})) {
        kill(pid_, SIGKILL);
        waitpid(pid_, &status, 0);
      }
    }
  }

  Agent(const Agent&) = delete;
  Agent& operator=(const Agent&) = delete;

  pid_t pid() const { return pid_; }

  void go() { (void)!write(gate_fd_, "g", 1); }

  // The child's report; {"harness": why} when none came within the timeout.
  Json result(Ms timeout = Ms{30'000}) {
    if (result_fd_ < 0) return Json{{"harness", "no child"}};
    const auto deadline = Clock::now() + timeout;
    std::string text;
    char buf[4096];
    for (;;) {
      auto left = std::chrono::duration_cast<Ms>(deadline - Clock::now()).count();
      if (left <= 0) return Json{{"harness", "no report within the deadline; got: " + text}};
      pollfd p{result_fd_, POLLIN, 0};
      int r = poll(&p, 1, static_cast<int>(left));
      if (r < 0 && errno == EINTR) continue;
      if (r <= 0) continue;
      ssize_t n = read(result_fd_, buf, sizeof buf);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) break;
      text.append(buf, static_cast<std::size_t>(n));
    }
    close(result_fd_);
    result_fd_ = -1;
    Json j = Json::parse(text, nullptr, false);
    if (j.is_discarded()) return Json{{"harness", "unparsable report: " + text}};
    return j;
  }

  // Lets the child exit; true when it exited 0 within the deadline.
  bool finish() {
    if (gate_fd_ >= 0) close(gate_fd_);
    gate_fd_ = -1;
    int status = 0;
    if (!wait_until([&] { return waitpid(pid_, &status, WNOHANG) == pid_; }, kWaitTimeout, Ms{1}))
      return false;
    reaped_ = true;
    return WIFEXITED(status) && WEXITSTATUS(status) == 0;
  }

 private:
  pid_t pid_ = -1;
  int result_fd_ = -1;
  int gate_fd_ = -1;
  bool reaped_ = false;
};

// Runs `body` as `id` and returns its report (the child exits right after).
Json run_agent(const Daemon& d, Identity id, Agent::Body body) {
  Agent a(std::move(id), d.socket_path(), std::move(body));
  Json r = a.result();
  EXPECT_TRUE(a.finish()) << "agent did not exit cleanly";
  return r;
}

// The method names of an interface, from the daemon's own description of it.
std::vector<std::string> methods_of(VarlinkClient& c, const std::string& interface) {
  Json d = call_ok(c, "org.varlink.service.GetInterfaceDescription", {{"interface", interface}});
  std::vector<std::string> out;
  if (!d.is_object() || !d.contains("description")) return out;
  std::string text = d["description"].get<std::string>();
  std::size_t pos = 0;
  while ((pos = text.find("method ", pos)) != std::string::npos) {
    if (pos == 0 || text[pos - 1] == '\n') {
      std::size_t start = pos + 7;
      std::size_t end = text.find('(', start);
      if (end != std::string::npos)
        out.push_back(interface + "." + text.substr(start, end - start));
    }
    pos += 7;
  }
  return out;
}

// A process's usage, without its elapsed time (which changes by itself).
Json usage_of(VarlinkClient& root, const std::string& process) {
  Json u = call_ok(root, "io.budgetd.Agent.GetUsage", {{"process", process}});
  if (!u.is_object()) return Json();
  u["usage"].erase("elapsed_seconds");
  return u["usage"];
}

std::string quota_field(VarlinkClient& root, const std::string& process, const std::string& field) {
  Json q = call_ok(root, "io.budgetd.Agent.GetQuota", {{"process", process}});
  return q.is_object() ? q["quota"].value(field, std::string("?")) : "?";
}

bool is_tracked(VarlinkClient& root, const std::string& process) {
  Json t = call_ok(root, "io.budgetd.Agent.IsTracked", {{"process", process}});
  return t.is_object() && t.value("tracked", false);
}

// ---- Operators -------------------------------------------------------------------------

TEST(Authz, RootMayCallEveryMethodOnAnyonesProcess) {
  Daemon d;
  ASSERT_TRUE(d.start(kOpenSocket));
  auto root = d.client();

  // Another user's logical id and another user's OS process.
  const std::string logical = unique_id("env-theirs");
  Agent agent({kNobody, kNogroup}, d.socket_path(), [&](VarlinkClient& c) {
    return outcome(c, "io.budgetd.Agent.Allocate",
                   {{"process", logical}, {"quota", {{"max_llm_calls", "5"}}}});
  });
  Json made = agent.result();
  ASSERT_EQ(error_of(made), "") << show(made);
  const std::string their_pid = std::to_string(agent.pid());

  for (const std::string& p : {logical, their_pid}) {
    SCOPED_TRACE(p);
    if (p == their_pid) call_ok(root, "io.budgetd.Agent.Allocate", {{"process", p}});
    Json r = call_ok(root, "io.budgetd.Agent.RecordUsage", {{"process", p}, {"llm_calls", 1}});
    ASSERT_TRUE(r.is_object());
    EXPECT_EQ(r["usage"]["llm_calls"], 1);
    call_ok(root, "io.budgetd.Admin.AdjustQuota",
            {{"process", p}, {"quota", {{"max_llm_calls", "7"}}}});
    EXPECT_EQ(quota_field(root, p, "max_llm_calls"), "7");
    call_ok(root, "io.budgetd.Agent.CheckQuota", {{"process", p}});
    call_ok(root, "io.budgetd.Agent.GetRemainingBudget", {{"process", p}});
    Json rel = call_ok(root, "io.budgetd.Agent.Release", {{"process", p}});
    EXPECT_EQ(rel.value("released", false), true) << rel.dump();
  }

  // Every method of both interfaces: whatever else a call with no parameters gets (missing
  // parameters, unknown process...), it is never PermissionDenied for root.
  std::vector<std::string> all = methods_of(root, "io.budgetd.Admin");
  ASSERT_GE(all.size(), 20u);
  for (const auto& m : methods_of(root, "io.budgetd.Agent")) all.push_back(m);
  for (const auto& m : all) {
    SCOPED_TRACE(m);
    Json o = outcome(root, m, Json::object());
    EXPECT_NE(error_of(o), kDenied) << show(o);
    EXPECT_FALSE(o.contains("transport")) << show(o);
  }
  // And the operator's stream of every event.
  auto w = d.client();
  Json watching = outcome(w, "io.budgetd.Admin.Watch", Json::object(), {.more = true});
  ASSERT_EQ(error_of(watching), "") << show(watching);
  EXPECT_EQ(watching["parameters"]["event"]["kind"], "watching") << show(watching);
  EXPECT_TRUE(agent.finish());
}

TEST(Authz, NonOperatorGetsPermissionDeniedFromEveryAdminMethodAndNothingChanges) {
  Daemon d;
  ASSERT_TRUE(d.start(kOpenSocket));
  auto root = d.client();
  const std::string target = unique_id("env-admin");
  call_ok(root, "io.budgetd.Agent.Allocate",
          {{"process", target}, {"quota", {{"max_llm_calls", "10"}}}});
  call_ok(root, "io.budgetd.Agent.RecordUsage", {{"process", target}, {"llm_calls", 2}});
  const std::string scope = "org/" + unique_id("evil");
  const Json scopes_before = call_ok(root, "io.budgetd.Admin.ListScopes");
  const Json rate_before = call_ok(root, "io.budgetd.Admin.GetRateLimitUsage", {{"user", "65534"}});
  const std::vector<std::string> admin = methods_of(root, "io.budgetd.Admin");
  ASSERT_GE(admin.size(), 20u);

  // Parameters that would do something, were the caller an operator.
  const Json would_act = {
      {"io.budgetd.Admin.AdjustQuota",
       {{"process", target}, {"quota", {{"max_llm_calls", "1000"}}}}},
      {"io.budgetd.Admin.SetLimits",
       {{"path", scope}, {"limits", {{{"resource", "llm_calls"}, {"hard", "1"}}}}}},
      {"io.budgetd.Admin.GetScope", {{"path", "/"}}},
      {"io.budgetd.Admin.SetRateLimit", {{"target", "default"}, {"requests_per_minute", 1}}},
      {"io.budgetd.Admin.GetRateLimitUsage", {{"user", "0"}}},
      {"io.budgetd.Admin.ResetRateLimits", {{"user", "0"}}},
      {"io.budgetd.Admin.Reset", {{"process", target}}},
      {"io.budgetd.Admin.Approve", {{"request_id", 1}}},
      {"io.budgetd.Admin.Deny", {{"request_id", 1}}},
      {"io.budgetd.Admin.Pause", {{"process", target}}},
      {"io.budgetd.Admin.Resume", {{"process", target}}},
  };
  for (const Identity& id :
       {Identity{kNobody, kNogroup}, Identity{kUser, kUserGroup, {kUserGroup}}}) {
    SCOPED_TRACE("uid " + std::to_string(id.uid));
    Json seen = run_agent(d, id, [&](VarlinkClient& c) {
      Json out = Json::object();
      for (const auto& m : admin) {
        out[m] = outcome(c, m, would_act.value(m, Json::object()));
        out[m + " {}"] = outcome(c, m, Json::object());
      }
      out["io.budgetd.Admin.Watch more"] =
          outcome(c, "io.budgetd.Admin.Watch", Json::object(), {.more = true});
      return out;
    });
    ASSERT_FALSE(seen.contains("harness")) << show(seen);
    ASSERT_EQ(seen.size(), 2 * admin.size() + 1) << show(seen);
    for (const auto& [call, o] : seen.items()) {
      EXPECT_EQ(error_of(o), kDenied) << call << ": " << show(o);
      if (error_of(o) == kDenied) {
        EXPECT_NE(o["parameters"].value("message", ""), "") << call;
      }
    }
  }

  // Nothing changed.
  EXPECT_EQ(quota_field(root, target, "max_llm_calls"), "10");
  EXPECT_EQ(usage_of(root, target)["llm_calls"], 2);
  EXPECT_EQ(call_ok(root, "io.budgetd.Admin.ListScopes"), scopes_before);
  call_err(root, "io.budgetd.Admin.GetScope", {{"path", scope}}, "io.budgetd.ScopeNotFound");
  EXPECT_EQ(call_ok(root, "io.budgetd.Admin.GetRateLimitUsage", {{"user", "65534"}})["limits"],
            rate_before["limits"]);
  EXPECT_EQ(call_ok(root, "io.budgetd.Admin.Stats")["pending"], 0);
}

// ---- Agents: their own pid, their descendants, their logical ids ----------------------

TEST(Authz, AgentMayAllocateAndRecordForItsOwnPid) {
  Daemon d;
  ASSERT_TRUE(d.start(kOpenSocket));
  auto root = d.client();
  Agent agent({kNobody, kNogroup}, d.socket_path(), [](VarlinkClient& c) {
    const std::string self = std::to_string(getpid());
    Json out;
    out["allocate"] = outcome(c, "io.budgetd.Agent.Allocate",
                              {{"process", self}, {"quota", {{"max_llm_calls", "5"}}}});
    out["record"] = outcome(c, "io.budgetd.Agent.RecordUsage",
                            {{"process", self}, {"llm_calls", 1}, {"tokens_in", 30}});
    out["check"] = outcome(c, "io.budgetd.Agent.CheckQuota", {{"process", self}});
    out["usage"] = outcome(c, "io.budgetd.Agent.GetUsage", {{"process", self}});
    out["remaining"] = outcome(c, "io.budgetd.Agent.GetRemainingBudget", {{"process", self}});
    return out;
  });
  Json seen = agent.result();
  ASSERT_FALSE(seen.contains("harness")) << show(seen);
  for (const auto& [call, o] : seen.items()) EXPECT_EQ(error_of(o), "") << call << ": " << show(o);
  EXPECT_EQ(seen["allocate"]["parameters"]["allocated"], true);
  EXPECT_EQ(seen["record"]["parameters"]["usage"]["llm_calls"], 1);
  EXPECT_EQ(seen["check"]["parameters"]["within"], true);
  EXPECT_EQ(seen["remaining"]["parameters"]["llm_calls"], "4");

  // As root, while the agent lives: its budget, charged, and owned by its uid.
  const std::string pid = std::to_string(agent.pid());
  EXPECT_EQ(usage_of(root, pid)["llm_calls"], 1);
  EXPECT_EQ(usage_of(root, pid)["tokens_in"], 30);
  EXPECT_EQ(quota_field(root, pid, "max_llm_calls"), "5");
  Json list = call_ok(root, "io.budgetd.Admin.ListProcesses");
  bool found = false;
  for (const auto& p : list["processes"])
    if (p["process"] == pid) {
      found = true;
      EXPECT_EQ(p["owner"], kNobody);
    }
  EXPECT_TRUE(found) << list.dump();

  // Its exit ends the budget.
  ASSERT_TRUE(agent.finish());
  EXPECT_TRUE(wait_until([&] { return !is_tracked(root, pid); }));
}

TEST(Authz, AgentMayRecordForItsOwnPidWithoutAllocating) {
  Daemon d;
  ASSERT_TRUE(d.start(kOpenSocket));
  auto root = d.client();
  Agent agent({kUser, kUserGroup}, d.socket_path(), [](VarlinkClient& c) {
    return outcome(c, "io.budgetd.Agent.RecordUsage",
                   {{"process", std::to_string(getpid())}, {"tool_calls", 3}});
  });
  Json seen = agent.result();
  ASSERT_EQ(error_of(seen), "") << show(seen);
  EXPECT_EQ(seen["parameters"]["usage"]["tool_calls"], 3);
  EXPECT_EQ(usage_of(root, std::to_string(agent.pid()))["tool_calls"], 3);
  EXPECT_TRUE(agent.finish());
}

TEST(Authz, AgentMayActOnItsDescendantsButNoOtherProcess) {
  Daemon d;
  ASSERT_TRUE(d.start(kOpenSocket));
  auto root = d.client();
  // A process of root's that is not the agent's descendant (a sibling of the agent).
  const std::vector<pid_t> stranger = spawn_sleepers(1);
  ASSERT_EQ(stranger.size(), 1u);
  const std::string stranger_pid = std::to_string(stranger[0]);
  const std::string test_pid = std::to_string(getpid());

  Agent agent({kNobody, kNogroup}, d.socket_path(), [&](VarlinkClient& c) {
    Json out;
    // A child and a grandchild of the agent.
    std::vector<pid_t> chain = spawn_sleepers(2);
    if (chain.size() != 2) return Json{{"harness", "spawn_sleepers failed"}};
    out["child"] = chain[0];
    out["grandchild"] = chain[1];
    for (std::size_t i = 0; i < chain.size(); ++i) {
      const std::string p = std::to_string(chain[i]);
      const std::string key = i == 0 ? "child" : "grandchild";
      out[key + " allocate"] = outcome(c, "io.budgetd.Agent.Allocate",
                                       {{"process", p}, {"quota", {{"max_llm_calls", "3"}}}});
      out[key + " record"] =
          outcome(c, "io.budgetd.Agent.RecordUsage", {{"process", p}, {"llm_calls", 1}});
      out[key + " usage"] = outcome(c, "io.budgetd.Agent.GetUsage", {{"process", p}});
    }
    // Not its descendants: its parent (the test, root's) and a sibling.
    for (const std::string& p : {test_pid, stranger_pid}) {
      out["other allocate " + p] = outcome(c, "io.budgetd.Agent.Allocate", {{"process", p}});
      out["other record " + p] =
          outcome(c, "io.budgetd.Agent.RecordUsage", {{"process", p}, {"llm_calls", 1}});
      out["other usage " + p] = outcome(c, "io.budgetd.Agent.GetUsage", {{"process", p}});
      out["other release " + p] = outcome(c, "io.budgetd.Agent.Release", {{"process", p}});
    }
    return out;
  });
  Json seen = agent.result();
  ASSERT_FALSE(seen.contains("harness")) << show(seen);
  for (const std::string key : {"child", "grandchild"}) {
    EXPECT_EQ(error_of(seen[key + " allocate"]), "") << show(seen[key + " allocate"]);
    EXPECT_EQ(error_of(seen[key + " record"]), "") << show(seen[key + " record"]);
    EXPECT_EQ(seen[key + " usage"]["parameters"]["usage"]["llm_calls"], 1)
        << show(seen[key + " usage"]);
    // As root: charged, with the quota the agent gave.
    const std::string p = std::to_string(seen[key].get<int>());
    EXPECT_EQ(usage_of(root, p)["llm_calls"], 1);
    EXPECT_EQ(quota_field(root, p, "max_llm_calls"), "3");
  }
  for (const std::string& p : {test_pid, stranger_pid}) {
    for (const std::string what : {"allocate", "record", "usage", "release"})
      EXPECT_EQ(error_of(seen["other " + what + " " + p]), kDenied)
          << what << " " << p << ": " << show(seen);
    EXPECT_FALSE(is_tracked(root, p)) << p;
  }
  ASSERT_TRUE(agent.finish());
  kill_sleepers();
}

TEST(Authz, LogicalIdBelongsToTheUidThatCreatedIt) {
  Daemon d;
  ASSERT_TRUE(d.start(kOpenSocket));
  auto root = d.client();
  const std::string id = unique_id("env-owned");

  Json created = run_agent(d, {kNobody, kNogroup}, [&](VarlinkClient& c) {
    Json out;
    out["allocate"] = outcome(c, "io.budgetd.Agent.Allocate",
                              {{"process", id}, {"quota", {{"max_llm_calls", "5"}}}});
    out["record"] = outcome(c, "io.budgetd.Agent.RecordUsage", {{"process", id}, {"llm_calls", 1}});
    return out;
  });
  ASSERT_EQ(error_of(created["allocate"]), "") << show(created);
  ASSERT_EQ(error_of(created["record"]), "") << show(created);

  // Another process of the same uid: the id is its uid's.
  Json same_uid = run_agent(d, {kNobody, kNogroup}, [&](VarlinkClient& c) {
    return outcome(c, "io.budgetd.Agent.RecordUsage", {{"process", id}, {"llm_calls", 1}});
  });
  ASSERT_EQ(error_of(same_uid), "") << show(same_uid);
  EXPECT_EQ(same_uid["parameters"]["usage"]["llm_calls"], 2);

  const Json usage_before = usage_of(root, id);
  const Json quota_before = call_ok(root, "io.budgetd.Agent.GetQuota", {{"process", id}});
  const Json stats_before = call_ok(root, "io.budgetd.Admin.GetSystemUsage");

  // Another uid: every call on the id is refused.
  Json other = run_agent(d, {kUser, kUserGroup}, [&](VarlinkClient& c) {
    Json out;
    out["RecordUsage"] =
        outcome(c, "io.budgetd.Agent.RecordUsage", {{"process", id}, {"llm_calls", 1}});
    // A oneway report gets no reply; the usage checked below shows it changed nothing.
    if (auto s = c.send_call("io.budgetd.Agent.RecordUsage", {{"process", id}, {"llm_calls", 5}},
                             {.oneway = true});
        !s)
      out["oneway"] = Json{{"transport", s.error()}};
    out["Allocate"] = outcome(c, "io.budgetd.Agent.Allocate",
                              {{"process", id}, {"quota", {{"max_llm_calls", "100"}}}});
    out["Release"] = outcome(c, "io.budgetd.Agent.Release", {{"process", id}});
    out["CheckQuota"] = outcome(c, "io.budgetd.Agent.CheckQuota", {{"process", id}});
    out["GetUsage"] = outcome(c, "io.budgetd.Agent.GetUsage", {{"process", id}});
    out["GetQuota"] = outcome(c, "io.budgetd.Agent.GetQuota", {{"process", id}});
    out["GetRemainingBudget"] =
        outcome(c, "io.budgetd.Agent.GetRemainingBudget", {{"process", id}});
    out["Consume"] = outcome(c, "io.budgetd.Agent.Consume",
                             {{"process", id}, {"resource", "llm_calls"}, {"amount", "1"}});
    out["Reserve"] = outcome(c, "io.budgetd.Agent.Reserve", {{"process", id}, {"tokens_in", 100}});
    return out;
  });
  ASSERT_FALSE(other.contains("harness")) << show(other);
  ASSERT_FALSE(other.contains("oneway")) << show(other);
  for (const auto& [call, o] : other.items())
    EXPECT_EQ(error_of(o), kDenied) << call << ": " << show(o);

  // Nothing changed: same usage (the oneway report too), same quota, still tracked.
  EXPECT_TRUE(is_tracked(root, id));
  EXPECT_EQ(usage_of(root, id), usage_before);
  EXPECT_EQ(usage_of(root, id)["llm_calls"], 2);
  EXPECT_EQ(call_ok(root, "io.budgetd.Agent.GetQuota", {{"process", id}}), quota_before);
  EXPECT_EQ(call_ok(root, "io.budgetd.Admin.GetSystemUsage"), stats_before);

  // A fresh id is free to create for anyone; it is then that uid's.
  const std::string mine = unique_id("env-user");
  Json fresh = run_agent(d, {kUser, kUserGroup}, [&](VarlinkClient& c) {
    return outcome(c, "io.budgetd.Agent.Allocate", {{"process", mine}});
  });
  EXPECT_EQ(error_of(fresh), "") << show(fresh);
  Json list = call_ok(root, "io.budgetd.Admin.ListProcesses");
  std::set<std::pair<std::string, int>> owners;
  for (const auto& p : list["processes"])
    owners.emplace(p["process"].get<std::string>(), p["owner"].get<int>());
  EXPECT_TRUE(owners.contains({id, static_cast<int>(kNobody)})) << list.dump();
  EXPECT_TRUE(owners.contains({mine, static_cast<int>(kUser)})) << list.dump();
}

TEST(Authz, LogicalIdCreatedByAReportBelongsToTheReportersUid) {
  Daemon d;
  ASSERT_TRUE(d.start(kOpenSocket));
  auto root = d.client();
  const std::string id = unique_id("env-reported");
  // RecordUsage of an unknown id creates it (with the default quota): it is the
  // reporter's, exactly as if it had been allocated.
  auto report = [&](const Identity& who) {
    return run_agent(d, who, [&](VarlinkClient& c) {
      return outcome(c, "io.budgetd.Agent.RecordUsage", {{"process", id}, {"llm_calls", 1}});
    });
  };
  Json first = report({kUser, kUserGroup});
  ASSERT_EQ(error_of(first), "") << show(first);
  Json again = report({kUser, kUserGroup});
  EXPECT_EQ(error_of(again), "") << show(again);
  Json other = report({kNobody, kNogroup});
  EXPECT_EQ(error_of(other), kDenied) << show(other);
  EXPECT_EQ(usage_of(root, id)["llm_calls"], 2);
  Json list = call_ok(root, "io.budgetd.Admin.ListProcesses");
  ASSERT_EQ(list["total"], 1) << list.dump();
  EXPECT_EQ(list["processes"][0]["owner"], kUser) << list.dump();
}

// ---- The operator group ----------------------------------------------------------------

// An agent's view of the Admin interface: Stats and an AdjustQuota of root's logical id.
Json admin_calls(const Daemon& d, const Identity& id, const std::string& target,
                 const std::string& new_limit) {
  return run_agent(d, id, [&](VarlinkClient& c) {
    Json out;
    out["Stats"] = outcome(c, "io.budgetd.Admin.Stats", Json::object());
    out["AdjustQuota"] = outcome(c, "io.budgetd.Admin.AdjustQuota",
                                 {{"process", target}, {"quota", {{"max_llm_calls", new_limit}}}});
    out["RecordUsage"] =
        outcome(c, "io.budgetd.Agent.RecordUsage", {{"process", target}, {"llm_calls", 1}});
    return out;
  });
}

void expect_operator_group(std::string_view group_setting, gid_t gid) {
  Daemon d;
  ASSERT_TRUE(d.start(std::string(kOpenSocket) + "operator_group = \"" +
                      std::string(group_setting) + "\"\n"));
  auto root = d.client();
  const std::string target = unique_id("env-root");
  call_ok(root, "io.budgetd.Agent.Allocate",
          {{"process", target}, {"quota", {{"max_llm_calls", "10"}}}});

  // A member through a supplementary group, and through its primary group: operators.
  Json member = admin_calls(d, {kUser, kUserGroup, {kUserGroup, gid}}, target, "20");
  for (const auto& [call, o] : member.items())
    EXPECT_EQ(error_of(o), "") << "supplementary: " << call << show(o);
  EXPECT_EQ(quota_field(root, target, "max_llm_calls"), "20");
  Json primary = admin_calls(d, {kNobody, gid}, target, "30");
  for (const auto& [call, o] : primary.items())
    EXPECT_EQ(error_of(o), "") << "primary: " << call << show(o);
  EXPECT_EQ(quota_field(root, target, "max_llm_calls"), "30");
  EXPECT_EQ(usage_of(root, target)["llm_calls"], 2);

  // Not a member: refused, and nothing changed.
  Json outsider = admin_calls(d, {kUser, kUserGroup, {kUserGroup}}, target, "40");
  for (const auto& [call, o] : outsider.items())
    EXPECT_EQ(error_of(o), kDenied) << "outsider: " << call << show(o);
  EXPECT_EQ(quota_field(root, target, "max_llm_calls"), "30");
  EXPECT_EQ(usage_of(root, target)["llm_calls"], 2);
}

TEST(Authz, MembersOfTheOperatorGroupAreOperators) {
  ASSERT_NE(getgrgid(kAdm), nullptr) << "group adm (gid 4) is missing";
  expect_operator_group(kAdmName, kAdm);
}

TEST(Authz, OperatorGroupMayBeANumericGid) {
  // A gid no group file names: the config may give the number.
  expect_operator_group("4242", 4242);
}

// ---- Delegation ------------------------------------------------------------------------

// As with cgroups, a child budget is nested under its parent's: what the child spends is
// charged to the parent too, so the child can never spend more than the parent has left,
// and a child may not be granted more than that.
TEST(Authz, DelegationGrantsAChildBudgetOnlyOutOfTheParentsRemainingBudget) {
  Daemon d;
  ASSERT_TRUE(d.start(kOpenSocket));
  auto root = d.client();
  Agent agent(
      {kNobody, kNogroup}, d.socket_path(),
      [](VarlinkClient& c) {
        const std::string self = std::to_string(getpid());
        Json out;
        std::vector<pid_t> kids = spawn_sleepers(1), big = spawn_sleepers(1),
                           rest = spawn_sleepers(1);
        if (kids.size() != 1 || big.size() != 1 || rest.size() != 1)
          return Json{{"harness", "spawn_sleepers failed"}};
        const std::string child = std::to_string(kids[0]);
        out["child"] = child;
        out["big child"] = std::to_string(big[0]);
        out["rest child"] = std::to_string(rest[0]);
        out["allocate 4"] = outcome(c, "io.budgetd.Agent.Allocate",
                                    {{"process", child}, {"quota", {{"max_llm_calls", "4"}}}});
        // The child spends its 4 calls.
        out["child spends 4"] =
            outcome(c, "io.budgetd.Agent.RecordUsage", {{"process", child}, {"llm_calls", 4}});
        out["child check"] = outcome(c, "io.budgetd.Agent.CheckQuota", {{"process", child}});
        out["own usage"] = outcome(c, "io.budgetd.Agent.GetUsage", {{"process", self}});
        out["own remaining"] =
            outcome(c, "io.budgetd.Agent.GetRemainingBudget", {{"process", self}});
        // More than the agent has left: refused, and nothing is allocated.
        out["allocate 20"] =
            outcome(c, "io.budgetd.Agent.Allocate",
                    {{"process", out["big child"]}, {"quota", {{"max_llm_calls", "20"}}}});
        out["big tracked"] =
            outcome(c, "io.budgetd.Agent.IsTracked", {{"process", out["big child"]}});
        // No explicit limit: the child gets what is left.
        out["allocate default"] =
            outcome(c, "io.budgetd.Agent.Allocate", {{"process", out["rest child"]}});
        out["own remaining after"] =
            outcome(c, "io.budgetd.Agent.GetRemainingBudget", {{"process", self}});
        return out;
      },
      /*wait_for_go=*/true);
  const std::string parent = std::to_string(agent.pid());
  // The operator gives the agent 10 LLM calls, then lets it run.
  call_ok(root, "io.budgetd.Agent.Allocate",
          {{"process", parent}, {"quota", {{"max_llm_calls", "10"}}}});
  agent.go();
  Json seen = agent.result();
  ASSERT_FALSE(seen.contains("harness")) << show(seen);
  for (const auto& key :
       {"allocate 4", "child spends 4", "child check", "own usage", "own remaining", "big tracked",
        "allocate default", "own remaining after"})
    EXPECT_EQ(error_of(seen[key]), "") << key << ": " << show(seen[key]);

  EXPECT_EQ(seen["allocate 4"]["parameters"]["quota"]["max_llm_calls"], "4");
  EXPECT_EQ(seen["child check"]["parameters"]["within"], false) << show(seen["child check"]);
  // The agent's 10, less the child's 4, leaves it 6.
  EXPECT_EQ(seen["own usage"]["parameters"]["usage"]["llm_calls"], 4) << show(seen["own usage"]);
  EXPECT_EQ(seen["own remaining"]["parameters"]["llm_calls"], "6") << show(seen["own remaining"]);

  const Json& refused = seen["allocate 20"];
  EXPECT_EQ(error_of(refused), kQuotaExceeded) << show(refused);
  EXPECT_EQ(refused["parameters"].value("reason", ""), "max_llm_calls_exceeded") << show(refused);
  EXPECT_EQ(refused["parameters"].value("limit", ""), "6") << show(refused);
  EXPECT_EQ(seen["big tracked"]["parameters"]["tracked"], false) << show(seen);
  EXPECT_EQ(seen["allocate default"]["parameters"]["quota"]["max_llm_calls"], "6") << show(seen);
  EXPECT_EQ(seen["own remaining after"]["parameters"]["llm_calls"], "6") << show(seen);

  // As root: the agent's own limit is what the operator gave; its usage includes the child's.
  EXPECT_EQ(quota_field(root, parent, "max_llm_calls"), "10");
  EXPECT_EQ(usage_of(root, parent)["llm_calls"], 4);
  EXPECT_EQ(quota_field(root, seen["child"], "max_llm_calls"), "4");
  EXPECT_EQ(usage_of(root, seen["child"])["llm_calls"], 4);
  EXPECT_FALSE(is_tracked(root, seen["big child"]));
  ASSERT_TRUE(agent.finish());
}

// ---- The socket file -------------------------------------------------------------------

struct stat stat_of(const std::string& path) {
  struct stat st {};
  EXPECT_EQ(lstat(path.c_str(), &st), 0) << path << ": " << std::strerror(errno);
  return st;
}

Json try_connect(const Daemon& d, const Identity& id) {
  return run_agent(d, id, [](VarlinkClient& c) {
    return outcome(c, "org.varlink.service.GetInfo", Json::object());
  });
}

TEST(Authz, SocketModeAndGroupFollowTheConfig) {
  {
    Daemon d;
    ASSERT_TRUE(d.start("[socket]\nmode = \"0660\"\ngroup = \"adm\"\n"));
    struct stat st = stat_of(d.socket_path());
    EXPECT_TRUE(S_ISSOCK(st.st_mode));
    EXPECT_EQ(st.st_mode & 07777, 0660u);
    EXPECT_EQ(st.st_gid, kAdm);
    // The group may connect; others may not.
    Json member = try_connect(d, {kUser, kUserGroup, {kAdm}});
    EXPECT_EQ(error_of(member), "") << show(member);
    Json outsider = try_connect(d, {kUser, kUserGroup});
    ASSERT_TRUE(outsider.contains("connect_error")) << show(outsider);
    EXPECT_NE(outsider["connect_error"].get<std::string>().find("ermission denied"),
              std::string::npos)
        << show(outsider);
  }
  {
    Daemon d;
    ASSERT_TRUE(d.start("[socket]\nmode = 0o600\n"));
    struct stat st = stat_of(d.socket_path());
    EXPECT_EQ(st.st_mode & 07777, 0600u);
    EXPECT_EQ(st.st_gid, getegid());
    Json nobody = try_connect(d, {kNobody, kNogroup});
    EXPECT_TRUE(nobody.contains("connect_error")) << show(nobody);
    auto root = d.client();
    call_ok(root, "org.varlink.service.GetInfo");
  }
  {
    Daemon d;
    ASSERT_TRUE(d.start("[socket]\nmode = \"0666\"\ngroup = \"4242\"\n"));
    struct stat st = stat_of(d.socket_path());
    EXPECT_EQ(st.st_mode & 07777, 0666u);
    EXPECT_EQ(st.st_gid, 4242u);
    Json anyone = try_connect(d, {kNobody, kNogroup});
    EXPECT_EQ(error_of(anyone), "") << show(anyone);
  }
}

}  // namespace
}  // namespace budgetd::integration
