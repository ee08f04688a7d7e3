// Process lifetime through pidfds, and the Enforcer's signals: exit is noticed by the
// loop, terminate escalates to SIGKILL after the grace period, pause/resume stop and
// continue, and nothing is ever signalled without a pidfd opened at allocation.
#include "daemon/process_watch.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <string>
#include <vector>

#include "daemon/enforcer.h"
#include "daemon/timer.h"

namespace budgetd::daemon {
namespace {

using SteadyClock = std::chrono::steady_clock;

pid_t spawn_sleeper(bool ignore_sigterm) {
  pid_t pid = fork();
  if (pid == 0) {
    if (ignore_sigterm) signal(SIGTERM, SIG_IGN);
    for (;;) pause();
  }
  return pid;
}

class ProcessWatchTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_EQ(uv_loop_init(&loop_), 0); }
  void TearDown() override {
    enforcer_.close_all();
    watch_.close_all();
    uv_run(&loop_, UV_RUN_DEFAULT);
    EXPECT_TRUE(watch_.idle());
    EXPECT_TRUE(enforcer_.idle());
    for (pid_t p : children_) {
      kill(p, SIGKILL);
      waitpid(p, nullptr, 0);
    }
    EXPECT_EQ(uv_loop_close(&loop_), 0);
  }

  template <class Pred>
  bool run_until(Pred done) {
    auto deadline = SteadyClock::now() + std::chrono::seconds(10);
    while (!done()) {
      if (SteadyClock::now() > deadline) return false;
      uv_run(&loop_, UV_RUN_NOWAIT);
    }
    return true;
  }

  pid_t child(bool ignore_sigterm = false) {
    pid_t p = spawn_sleeper(ignore_sigterm);
    children_.push_back(p);
    return p;
  }
  void reaped(pid_t p) { std::erase(children_, p); }

  uv_loop_t loop_{};
  std::vector<std::string> exited_;
  ProcessWatch watch_{&loop_, [this](const std::string& id) { exited_.push_back(id); }};
  Enforcer enforcer_{&loop_, watch_};
  std::vector<pid_t> children_;
};

TEST_F(ProcessWatchTest, LogicalIdsNeedNoWatch) {
  ASSERT_TRUE(watch_.track("env-123").has_value());
  EXPECT_EQ(watch_.size(), 0u);
  EXPECT_FALSE(watch_.pidfd("env-123"));
}

TEST_F(ProcessWatchTest, APidThatDoesNotExistIsRefusedWithAClearError) {
  pid_t p = child();
  kill(p, SIGKILL);
  waitpid(p, nullptr, 0);  // reaped: the pid names nothing now
  reaped(p);
  auto r = watch_.track(std::to_string(p));
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code, Errc::unknown_process);
  EXPECT_EQ(r.error().detail, "cannot watch pid " + std::to_string(p) + ": ESRCH");
}

TEST_F(ProcessWatchTest, ExitIsNoticedAndTheWatchClosed) {
  pid_t p = child();
  const std::string id = std::to_string(p);
  ASSERT_TRUE(watch_.track(id).has_value());
  ASSERT_TRUE(watch_.track(id).has_value());  // again: a no-op
  EXPECT_EQ(watch_.size(), 1u);
  EXPECT_TRUE(watch_.pidfd(id));
  kill(p, SIGKILL);
  ASSERT_TRUE(run_until([&] { return !exited_.empty(); }));
  EXPECT_EQ(exited_, std::vector<std::string>{id});
  EXPECT_EQ(watch_.size(), 0u);
  waitpid(p, nullptr, 0);
  reaped(p);
}

TEST_F(ProcessWatchTest, UntrackStopsWatching) {
  pid_t p = child();
  const std::string id = std::to_string(p);
  ASSERT_TRUE(watch_.track(id).has_value());
  watch_.untrack(id);
  EXPECT_FALSE(watch_.pidfd(id));
  kill(p, SIGKILL);
  waitpid(p, nullptr, 0);
  reaped(p);
  for (int i = 0; i < 20; ++i) uv_run(&loop_, UV_RUN_NOWAIT);
  EXPECT_TRUE(exited_.empty());
}

TEST_F(ProcessWatchTest, TerminateEndsAProcessWithSigterm) {
  pid_t p = child();
  const std::string id = std::to_string(p);
  ASSERT_TRUE(watch_.track(id).has_value());
  ASSERT_TRUE(enforcer_.terminate(id, 60).has_value());
  int status = 0;
  ASSERT_EQ(waitpid(p, &status, 0), p);
  reaped(p);
  EXPECT_TRUE(WIFSIGNALED(status));
  EXPECT_EQ(WTERMSIG(status), SIGTERM);
  ASSERT_TRUE(run_until([&] { return !exited_.empty(); }));
  EXPECT_EQ(enforcer_.pending_kills(), 1u);  // the SIGKILL timer finds nobody later: ESRCH
}

TEST_F(ProcessWatchTest, TerminateEscalatesToSigkillAfterTheGracePeriod) {
  pid_t p = child(/*ignore_sigterm=*/true);
  const std::string id = std::to_string(p);
  ASSERT_TRUE(watch_.track(id).has_value());
  // The child may not have installed SIG_IGN yet; wait until its disposition says so.
  ASSERT_TRUE(run_until([&] {
    FILE* f = fopen(("/proc/" + id + "/status").c_str(), "r");
    if (!f) return false;
    char line[256];
    bool ignored = false;
    while (fgets(line, sizeof line, f))
      if (std::string_view(line).starts_with("SigIgn:"))
        ignored = (std::stoull(line + 7, nullptr, 16) >> (SIGTERM - 1)) & 1;
    fclose(f);
    return ignored;
  }));
  ASSERT_TRUE(enforcer_.terminate(id, 0).has_value());
  ASSERT_TRUE(run_until([&] { return !exited_.empty(); }));
  int status = 0;
  ASSERT_EQ(waitpid(p, &status, 0), p);
  reaped(p);
  EXPECT_TRUE(WIFSIGNALED(status));
  EXPECT_EQ(WTERMSIG(status), SIGKILL);
}

TEST_F(ProcessWatchTest, PauseAndResume) {
  pid_t p = child();
  const std::string id = std::to_string(p);
  ASSERT_TRUE(watch_.track(id).has_value());
  ASSERT_TRUE(enforcer_.pause(id).has_value());
  int status = 0;
  ASSERT_EQ(waitpid(p, &status, WUNTRACED), p);
  EXPECT_TRUE(WIFSTOPPED(status));
  ASSERT_TRUE(enforcer_.resume(id).has_value());
  ASSERT_EQ(waitpid(p, &status, WCONTINUED), p);
  EXPECT_TRUE(WIFCONTINUED(status));
}

TEST_F(ProcessWatchTest, NothingIsSignalledWithoutAPidfdFromAllocation) {
  pid_t p = child();
  const std::string id = std::to_string(p);  // alive, but never tracked
  auto r = enforcer_.pause(id);
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code, Errc::unknown_process);
  EXPECT_FALSE(enforcer_.terminate(id, 0).has_value());
  EXPECT_FALSE(enforcer_.pause("env-123").has_value());
  int status = 0;
  EXPECT_EQ(waitpid(p, &status, WNOHANG | WUNTRACED), 0);  // untouched: still running
}

TEST(DeadlineTimer, DelayIsRoundedUpAndBounded) {
  const TimePoint t0{std::chrono::seconds(1000)};
  EXPECT_EQ(DeadlineTimer::delay_ms(t0, t0), 1u);  // due now: 1 ms, never a spin
  EXPECT_EQ(DeadlineTimer::delay_ms(t0, t0 - std::chrono::seconds(5)), 1u);
  EXPECT_EQ(DeadlineTimer::delay_ms(t0, t0 + std::chrono::microseconds(1)), 1u);
  EXPECT_EQ(DeadlineTimer::delay_ms(t0, t0 + std::chrono::microseconds(1001)), 2u);
  EXPECT_EQ(DeadlineTimer::delay_ms(t0, t0 + std::chrono::seconds(3)), 3000u);
  EXPECT_EQ(DeadlineTimer::delay_ms(t0, TimePoint::max()), DeadlineTimer::kMaxDelayMs);
}

TEST(DeadlineTimer, FiresAtTheDeadlineOnTheInjectedClock) {
  uv_loop_t loop;
  ASSERT_EQ(uv_loop_init(&loop), 0);
  FakeClock clock(TimePoint{std::chrono::seconds(1000)});
  int fired = 0;
  {
    DeadlineTimer timer(&loop, clock, [&] { ++fired; });
    timer.arm(clock.now() + std::chrono::milliseconds(2));
    EXPECT_TRUE(timer.armed_at().has_value());
    auto deadline = SteadyClock::now() + std::chrono::seconds(10);
    while (fired == 0 && SteadyClock::now() < deadline) uv_run(&loop, UV_RUN_ONCE);
    EXPECT_EQ(fired, 1);
    EXPECT_FALSE(timer.armed_at().has_value());
    timer.arm(std::nullopt);
    timer.close();
    uv_run(&loop, UV_RUN_DEFAULT);
    EXPECT_TRUE(timer.closed());
  }
  EXPECT_EQ(uv_loop_close(&loop), 0);
}

}  // namespace
}  // namespace budgetd::daemon
