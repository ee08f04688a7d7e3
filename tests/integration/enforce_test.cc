// Enforcement on real OS processes (issue 4 section 4, "Timers" and "Process lifetime"):
// the test forks children that only pause, gives them budgets with short timeouts, and
// watches what the daemon does to them through waitpid and /proc. The daemon signals
// through a pidfd; the test is the children's parent, so it sees exactly how they died.
// Nothing sleeps a fixed time: every wait polls a condition with a deadline.
#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>

#include "tests/integration/daemon_fixture.h"

namespace budgetd::integration {
namespace {

using Clock = std::chrono::steady_clock;

// How a child should meet SIGTERM.
enum class OnSigterm { die, ignore };

// A child of the test that pauses until a signal ends it. It is killed and reaped by the
// destructor if the test did not reap it.
class Child {
 public:
  explicit Child(OnSigterm on_term = OnSigterm::die) {
    int ready[2];
    if (pipe2(ready, O_CLOEXEC) != 0) {
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
      close(ready[0]);
      prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (getppid() != parent) _exit(127);
      // Inherited sockets (the test's connections) must not outlive the test through us.
      if (ready[1] > 3) close_range(3, static_cast<unsigned>(ready[1]) - 1, 0);
      close_range(static_cast<unsigned>(ready[1]) + 1, ~0U, 0);
      sigset_t none;
      sigemptyset(&none);
      sigprocmask(SIG_SETMASK, &none, nullptr);
      signal(SIGTERM, on_term == OnSigterm::ignore ? SIG_IGN : SIG_DFL);
      // Dispositions are set: the test may now allocate this pid.
      (void)!write(ready[1], "r", 1);
      close(ready[1]);
      for (;;) pause();
    }
    close(ready[1]);
    char b;
    ssize_t n;
    do n = read(ready[0], &b, 1);
    while (n < 0 && errno == EINTR);
    close(ready[0]);
    if (n != 1) ADD_FAILURE() << "the child did not start";
  }
  ~Child() {
    if (pid_ <= 0 || status_) return;
    kill(pid_, SIGKILL);
    waitpid(pid_, nullptr, 0);
  }
  Child(const Child&) = delete;
  Child& operator=(const Child&) = delete;

  pid_t pid() const { return pid_; }
  std::string id() const { return std::to_string(pid_); }

  // Reaps the child if it has exited (WNOHANG); its wait status once reaped.
  std::optional<int> poll_exit() {
    if (status_ || pid_ <= 0) return status_;
    int status = 0;
    if (waitpid(pid_, &status, WNOHANG) == pid_) status_ = status;
    return status_;
  }
  // Waits for the exit with a deadline.
  std::optional<int> wait_exit(Ms timeout) {
    wait_until([&] { return poll_exit().has_value(); }, timeout, Ms{2});
    return status_;
  }
  // The state letter of /proc/PID/stat (R, S, T, Z...), or '?'.
  char state() const {
    std::ifstream f("/proc/" + std::to_string(pid_) + "/stat");
    std::string text((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    std::size_t close_paren = text.rfind(')');
    if (close_paren == std::string::npos || close_paren + 2 >= text.size()) return '?';
    return text[close_paren + 2];
  }

 private:
  pid_t pid_ = -1;
  std::optional<int> status_;
};

std::string describe(int status) {
  if (WIFSIGNALED(status)) return std::string("killed by ") + sigabbrev_np(WTERMSIG(status));
  if (WIFEXITED(status)) return "exited " + std::to_string(WEXITSTATUS(status));
  return "status " + std::to_string(status);
}

double seconds_since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

bool is_tracked(VarlinkClient& c, const std::string& process) {
  Json t = call_ok(c, "io.budgetd.Agent.IsTracked", {{"process", process}});
  return t.is_object() && t.value("tracked", false);
}

// An Admin.Watch stream: events of every process, read with a deadline.
class Watcher {
 public:
  explicit Watcher(Daemon& d) : c_(d.client()) {
    auto s = c_.send_call("io.budgetd.Admin.Watch", Json::object(), {.more = true});
    EXPECT_TRUE(s) << (s ? "" : s.error());
    auto first = c_.read_reply(kWaitTimeout);
    EXPECT_TRUE(first && first->ok() && first->parameters["event"]["kind"] == "watching")
        << (first ? first->parameters.dump() : first.error());
  }
  // Reads events until one with `kind` for `process` arrives; returns it (null on timeout).
  Json wait_for(std::string_view kind, const std::string& process, Ms timeout = kWaitTimeout) {
    const auto deadline = Clock::now() + timeout;
    for (;;) {
      auto left = std::chrono::duration_cast<Ms>(deadline - Clock::now());
      if (left.count() <= 0) return nullptr;
      auto r = c_.read_reply(left);
      if (!r) return nullptr;
      seen_.push_back(r->parameters);
      const Json& e = r->parameters["event"];
      if (e.value("kind", "") == kind && e.value("process", "") == process) return e;
    }
  }
  std::string seen() const { return Json(seen_).dump(); }

 private:
  VarlinkClient c_;
  std::vector<Json> seen_;
};

Json quota(std::string_view on_timeout, std::string_view grace = "1") {
  return {{"timeout_seconds", "1"},
          {"soft_timeout_seconds", "1"},
          {"on_timeout", on_timeout},
          {"kill_grace_seconds", grace}};
}

// ---- terminate -------------------------------------------------------------------------

TEST(Enforce, TerminateEndsTheProcessWithSigtermAtTheTimeout) {
  Daemon d;
  ASSERT_TRUE(d.start());
  auto c = d.client();
  Watcher watch(d);
  Child child;
  const auto allocated = Clock::now();
  Json a = call_ok(c, "io.budgetd.Agent.Allocate",
                   {{"process", child.id()}, {"quota", quota("terminate")}});
  ASSERT_TRUE(a.is_object());
  EXPECT_EQ(a["quota"]["on_timeout"], "terminate");

  auto status = child.wait_exit(Ms{15'000});
  ASSERT_TRUE(status) << "the child was not ended; log:\n" << d.log();
  EXPECT_TRUE(WIFSIGNALED(*status) && WTERMSIG(*status) == SIGTERM) << describe(*status);
  // Not before the timeout (with slack for coarse timers).
  EXPECT_GE(seconds_since(allocated), 0.9);

  Json timeout = watch.wait_for("timeout", child.id());
  ASSERT_FALSE(timeout.is_null()) << watch.seen();
  EXPECT_EQ(timeout.value("reason", ""), "timeout_exceeded");
  EXPECT_EQ(timeout.value("action", ""), "terminate");
  // Its exit then ends its budget.
  EXPECT_FALSE(watch.wait_for("released", child.id()).is_null()) << watch.seen();
  EXPECT_TRUE(wait_until([&] { return !is_tracked(c, child.id()); }));
  EXPECT_TRUE(d.wait_for_log("sent SIGTERM"));
  EXPECT_EQ(d.log().find("sent SIGKILL"), std::string::npos) << d.log();
}

TEST(Enforce, ChildIgnoringSigtermGetsSigkillAfterTheGrace) {
  Daemon d;
  ASSERT_TRUE(d.start());
  auto c = d.client();
  Child child(OnSigterm::ignore);
  const auto allocated = Clock::now();
  call_ok(c, "io.budgetd.Agent.Allocate",
          {{"process", child.id()}, {"quota", quota("terminate", "1")}});

  // SIGTERM comes first and is ignored: the child lives on until the grace is over.
  ASSERT_TRUE(d.wait_for_log("sent SIGTERM", Ms{15'000})) << d.log();
  auto status = child.wait_exit(Ms{15'000});
  ASSERT_TRUE(status) << "the child was not killed; log:\n" << d.log();
  EXPECT_TRUE(WIFSIGNALED(*status) && WTERMSIG(*status) == SIGKILL) << describe(*status);
  // timeout (1 s) + grace (1 s), with slack for coarse timers.
  EXPECT_GE(seconds_since(allocated), 1.8);
  EXPECT_TRUE(d.wait_for_log("sent SIGKILL"));
  EXPECT_TRUE(wait_until([&] { return !is_tracked(c, child.id()); }));
}

// ---- pause -----------------------------------------------------------------------------

TEST(Enforce, PauseStopsTheProcessAndResumeContinuesIt) {
  Daemon d;
  ASSERT_TRUE(d.start());
  auto c = d.client();
  Child child;
  call_ok(c, "io.budgetd.Agent.Allocate", {{"process", child.id()}, {"quota", quota("pause")}});

  ASSERT_TRUE(wait_until([&] { return child.state() == 'T'; }, Ms{15'000}))
      << "state " << child.state() << "; log:\n"
      << d.log();
  EXPECT_FALSE(child.poll_exit());
  EXPECT_TRUE(is_tracked(c, child.id()));

  call_ok(c, "io.budgetd.Admin.Resume", {{"process", child.id()}});
  EXPECT_TRUE(wait_until([&] { return child.state() == 'S' || child.state() == 'R'; }))
      << child.state();

  // And by hand: Admin.Pause, then Admin.Resume.
  call_ok(c, "io.budgetd.Admin.Pause", {{"process", child.id()}});
  EXPECT_TRUE(wait_until([&] { return child.state() == 'T'; })) << child.state();
  call_ok(c, "io.budgetd.Admin.Resume", {{"process", child.id()}});
  EXPECT_TRUE(wait_until([&] { return child.state() == 'S' || child.state() == 'R'; }))
      << child.state();
  EXPECT_FALSE(child.poll_exit());

  // A logical id has no process to signal.
  call_ok(c, "io.budgetd.Agent.Allocate", {{"process", "env-no-process"}});
  call_err(c, "io.budgetd.Admin.Pause", {{"process", "env-no-process"}},
           "io.budgetd.ProcessNotFound");
}

// ---- process lifetime ------------------------------------------------------------------

TEST(Enforce, ExitOfAnOsPidReleasesIt) {
  Daemon d;
  ASSERT_TRUE(d.start());
  auto c = d.client();
  Watcher watch(d);
  Child child;
  call_ok(c, "io.budgetd.Agent.Allocate", {{"process", child.id()}});
  call_ok(c, "io.budgetd.Agent.RecordUsage",
          {{"process", child.id()}, {"llm_calls", 2}, {"tokens_in", 40}});
  ASSERT_TRUE(is_tracked(c, child.id()));

  kill(child.pid(), SIGTERM);
  auto status = child.wait_exit(kWaitTimeout);
  ASSERT_TRUE(status);
  ASSERT_TRUE(wait_until([&] { return !is_tracked(c, child.id()); })) << d.log();
  Json released = watch.wait_for("released", child.id());
  ASSERT_FALSE(released.is_null()) << watch.seen();
  // With its final usage.
  EXPECT_EQ(released["usage"]["llm_calls"], 2) << released.dump();
  EXPECT_EQ(released["usage"]["tokens_in"], 40) << released.dump();
  Json stats = call_ok(c, "io.budgetd.Admin.Stats");
  EXPECT_EQ(stats["daemon"]["watched_pids"], 0) << stats.dump();
}

TEST(Enforce, ExitReleasesAProcessThatWasNeverAllocatedOnlyReported) {
  Daemon d;
  ASSERT_TRUE(d.start());
  auto c = d.client();
  Child child;
  // RecordUsage of an unknown pid creates it with the default quota, and watches it too.
  call_ok(c, "io.budgetd.Agent.RecordUsage", {{"process", child.id()}, {"tool_calls", 1}});
  ASSERT_TRUE(is_tracked(c, child.id()));
  kill(child.pid(), SIGKILL);
  ASSERT_TRUE(child.wait_exit(kWaitTimeout));
  EXPECT_TRUE(wait_until([&] { return !is_tracked(c, child.id()); })) << d.log();
}

// A pid that no process has: reaped children's pids, not reused this soon.
pid_t vanished_pid() {
  pid_t p = fork();
  if (p == 0) _exit(0);
  waitpid(p, nullptr, 0);
  return p;
}

TEST(Enforce, PidThatCannotBeOpenedIsRefusedWithAClearError) {
  Daemon d;
  ASSERT_TRUE(d.start());
  auto c = d.client();
  const std::string gone = std::to_string(vanished_pid());
  for (const char* method : {"io.budgetd.Agent.Allocate", "io.budgetd.Agent.RecordUsage"}) {
    SCOPED_TRACE(method);
    Json e =
        call_err(c, method, {{"process", gone}, {"llm_calls", 1}}, "io.budgetd.ProcessNotFound");
    ASSERT_TRUE(e.is_object());
    const std::string message = e.value("message", "");
    EXPECT_NE(message.find("cannot watch pid " + gone), std::string::npos) << message;
    EXPECT_NE(message.find("ESRCH"), std::string::npos) << message;
    // Refused means not tracked: nothing was left behind.
    EXPECT_FALSE(is_tracked(c, gone));
  }
  Json sys = call_ok(c, "io.budgetd.Admin.GetSystemUsage");
  EXPECT_EQ(sys["total_processes"], 0) << sys.dump();
  // A pid above any pid_max.
  call_err(c, "io.budgetd.Agent.Allocate", {{"process", "999999999"}},
           "io.budgetd.ProcessNotFound");
}

}  // namespace
}  // namespace budgetd::integration
