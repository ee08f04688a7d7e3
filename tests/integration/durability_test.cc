// Durable state (issue 5) against the real daemon: what budgetd acknowledged survives
// kill -9, timeouts stay anchored across a restart, idempotency keys hold across one, and
// a bad store stops the start with a clear message.
//
// The crash test kills at seeded moments: a pipelined client keeps a window of reports in
// flight and the harness sends SIGKILL once a seeded number of them were acknowledged, so
// the kill lands while reports are queued, being applied, or waiting for their batch's
// fsync. BUDGETD_CRASH_POINTS (default 50) and BUDGETD_CRASH_SEED (default 1) vary it.
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstdio>
#include <cstring>
#include <deque>
#include <filesystem>
#include <fstream>
#include <random>
#include <set>
#include <string>

#include "tests/integration/daemon_fixture.h"

namespace budgetd::integration {
namespace {

namespace fs = std::filesystem;

uint64_t env_u64(const char* name, uint64_t def) {
  const char* v = std::getenv(name);
  return v && *v ? std::strtoull(v, nullptr, 10) : def;
}

// A raw varlink connection: write frames, read NUL-terminated replies. The harness's
// client is blocking one-call-at-a-time; the crash test needs a window in flight.
class Pipe {
 public:
  explicit Pipe(const std::string& path) {
    fd_ = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    std::strncpy(a.sun_path, path.c_str(), sizeof(a.sun_path) - 1);
    if (connect(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
      close(fd_);
      fd_ = -1;
    }
  }
  ~Pipe() {
    if (fd_ >= 0) close(fd_);
  }
  bool ok() const { return fd_ >= 0; }
  bool send(const std::string& frame) {
    std::string f = frame;
    f.push_back('\0');
    std::size_t off = 0;
    while (off < f.size()) {
      ssize_t n = write(fd_, f.data() + off, f.size() - off);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return false;
      off += static_cast<std::size_t>(n);
    }
    return true;
  }
  // The next reply, or nullopt when the connection ended.
  std::optional<std::string> receive() {
    for (;;) {
      auto nul = buf_.find('\0');
      if (nul != std::string::npos) {
        std::string r = buf_.substr(0, nul);
        buf_.erase(0, nul + 1);
        return r;
      }
      char tmp[65536];
      ssize_t n = read(fd_, tmp, sizeof tmp);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return std::nullopt;
      buf_.append(tmp, static_cast<std::size_t>(n));
    }
  }

 private:
  int fd_ = -1;
  std::string buf_;
};

std::string report_frame(const std::string& process, const std::string& key) {
  Json p = {{"process", process}, {"tokens_in", 1}, {"cost", "0.000001"}};
  if (!key.empty()) p["idempotency_key"] = key;
  return Json{{"method", "io.budgetd.Agent.RecordUsage"}, {"parameters", p}}.dump();
}

// 0 before the first report created the process.
uint64_t tokens_in_of(Daemon& d, const std::string& process) {
  auto c = d.client();
  auto r = c.call("io.budgetd.Agent.GetUsage", {{"process", process}});
  if (!r) {
    ADD_FAILURE() << "GetUsage: transport failed";
    return UINT64_MAX;
  }
  if (r->error == "io.budgetd.ProcessNotFound") return 0;
  if (r->error) {
    ADD_FAILURE() << "GetUsage: " << *r->error;
    return UINT64_MAX;
  }
  return r->parameters["usage"]["tokens_in"].get<uint64_t>();
}

class Durability : public ::testing::Test {
 protected:
  std::string state_dir() { return d_.dir() + "/state"; }
  Daemon make_daemon() { return Daemon(DaemonOptions{}); }
  std::string config(std::string_view durability = "ack") {
    return fmt_config(durability, state_dir());
  }
  static std::string fmt_config(std::string_view durability, const std::string& dir) {
    return "[store]\nstate_dir = \"" + dir + "\"\ndurability = \"" + std::string(durability) + "\"\n";
  }
  Daemon d_;
};

// Every acknowledged report survives kill -9; nothing is counted that was never sent.
TEST_F(Durability, KillNineKeepsEveryAcknowledgedReport) {
  const uint64_t points = env_u64("BUDGETD_CRASH_POINTS", 50);
  std::mt19937_64 rng(env_u64("BUDGETD_CRASH_SEED", 1));
  const std::string process = "crash-agent";
  const std::size_t window = 32;
  uint64_t acked = 0, sent = 0;
  for (uint64_t point = 0; point < points; ++point) {
    ASSERT_TRUE(d_.start(config())) << "kill point " << point;
    const uint64_t now = tokens_in_of(d_, process);
    ASSERT_GE(now, acked) << "kill point " << point << ": an acknowledged report was lost";
    ASSERT_LE(now, sent) << "kill point " << point << ": counted more than was sent";
    const uint64_t kill_after = std::uniform_int_distribution<uint64_t>(0, 400)(rng);
    Pipe p(d_.socket_path());
    ASSERT_TRUE(p.ok());
    std::size_t in_flight = 0;
    uint64_t acked_here = 0;
    for (; in_flight < window; ++in_flight, ++sent) ASSERT_TRUE(p.send(report_frame(process, "")));
    while (acked_here < kill_after) {
      auto r = p.receive();
      ASSERT_TRUE(r) << "connection lost before the kill";
      ASSERT_EQ(r->find("\"error\""), std::string::npos) << *r;
      ++acked_here;
      ++acked;
      ASSERT_TRUE(p.send(report_frame(process, "")));
      ++sent;
    }
    d_.kill9();
    // Replies already on their way were acknowledged too (the daemon sent them).
    while (auto r = p.receive()) ++acked;
  }
  ASSERT_TRUE(d_.start(config()));
  const uint64_t final_count = tokens_in_of(d_, process);
  EXPECT_GE(final_count, acked);
  EXPECT_LE(final_count, sent);
  std::fprintf(stderr, "crash test: %llu kill points, %llu reports sent, %llu acknowledged, %llu counted\n",
               static_cast<unsigned long long>(points), static_cast<unsigned long long>(sent),
               static_cast<unsigned long long>(acked), static_cast<unsigned long long>(final_count));
}

// With a key on every report and retries of the unanswered ones, the count is exact.
TEST_F(Durability, KeyedRetriesCountEveryReportExactlyOnce) {
  const uint64_t points = std::max<uint64_t>(env_u64("BUDGETD_CRASH_POINTS", 50) / 5, 5);
  std::mt19937_64 rng(env_u64("BUDGETD_CRASH_SEED", 1) + 7);
  const std::string process = "keyed-agent";
  const std::size_t window = 16;
  uint64_t next_key = 0;
  std::set<uint64_t> unacked;  // sent, no answer seen: retried after the restart
  for (uint64_t point = 0; point <= points; ++point) {
    ASSERT_TRUE(d_.start(config())) << "kill point " << point;
    Pipe p(d_.socket_path());
    ASSERT_TRUE(p.ok());
    std::deque<uint64_t> order;  // keys in the order sent on this connection
    for (uint64_t k : unacked) {
      ASSERT_TRUE(p.send(report_frame(process, "k" + std::to_string(k))));
      order.push_back(k);
    }
    const bool last = point == points;
    const uint64_t kill_after = last ? unacked.size() + 200 : std::uniform_int_distribution<uint64_t>(0, 200)(rng);
    uint64_t answered = 0;
    while (order.size() < window && !last) {
      unacked.insert(next_key);
      order.push_back(next_key);
      ASSERT_TRUE(p.send(report_frame(process, "k" + std::to_string(next_key++))));
    }
    bool killed = false;
    while (!order.empty()) {
      if (!killed && answered >= kill_after) {
        d_.kill9();
        killed = true;
      }
      auto r = p.receive();
      if (!r) break;
      ASSERT_EQ(r->find("\"error\""), std::string::npos) << *r;
      unacked.erase(order.front());
      order.pop_front();
      ++answered;
      if (!killed && !last) {
        unacked.insert(next_key);
        order.push_back(next_key);
        ASSERT_TRUE(p.send(report_frame(process, "k" + std::to_string(next_key++))));
      }
    }
    if (last) {
      ASSERT_TRUE(unacked.empty());
      EXPECT_EQ(tokens_in_of(d_, process), next_key) << "each key counted exactly once";
    } else if (!killed) {
      d_.kill9();
    }
  }
}

// A process keeps its allocation time: its timeout continues across a restart.
TEST_F(Durability, TimeoutStaysAnchoredAcrossARestart) {
  ASSERT_TRUE(d_.start(config()));
  {
    auto c = d_.client();
    call_ok(c, "io.budgetd.Agent.Allocate",
            {{"process", "anchored"}, {"quota", {{"timeout_seconds", 3600}, {"soft_timeout_seconds", 3000}}}});
  }
  double before = 0;
  {
    auto c = d_.client();
    before = call_ok(c, "io.budgetd.Agent.GetUsage", {{"process", "anchored"}})["usage"]["elapsed_seconds"].get<double>();
  }
  d_.kill9();
  ASSERT_TRUE(d_.start(config()));
  auto c = d_.client();
  Json u = call_ok(c, "io.budgetd.Agent.GetUsage", {{"process", "anchored"}});
  ASSERT_FALSE(u.is_null());
  EXPECT_GE(u["usage"]["elapsed_seconds"].get<double>(), before) << "a restart must not restart the clock";
  Json q = call_ok(c, "io.budgetd.Agent.GetQuota", {{"process", "anchored"}});
  EXPECT_EQ(q["quota"]["timeout_seconds"], "3600");
}

// The same key is counted once, before and after a (clean) restart.
TEST_F(Durability, IdempotencyKeyHoldsAcrossARestart) {
  ASSERT_TRUE(d_.start(config()));
  Json first;
  {
    auto c = d_.client();
    first = call_ok(c, "io.budgetd.Agent.RecordUsage",
                    {{"process", "idem"}, {"tokens_in", 5}, {"idempotency_key", "once"}});
    Json again = call_ok(c, "io.budgetd.Agent.RecordUsage",
                         {{"process", "idem"}, {"tokens_in", 5}, {"idempotency_key", "once"}});
    EXPECT_EQ(first, again) << "a retry returns the first reply unchanged";
  }
  ASSERT_TRUE(d_.stop());
  // A clean stop checkpoints the WAL into the database: one file is left.
  EXPECT_FALSE(fs::exists(state_dir() + "/budgetd.db-wal"));
  EXPECT_TRUE(fs::exists(state_dir() + "/budgetd.db"));
  ASSERT_TRUE(d_.start(config()));
  auto c = d_.client();
  Json after = call_ok(c, "io.budgetd.Agent.RecordUsage",
                       {{"process", "idem"}, {"tokens_in", 5}, {"idempotency_key", "once"}});
  EXPECT_EQ(first, after);
  EXPECT_EQ(tokens_in_of(d_, "idem"), 5u);
}

// A pid that now belongs to another process (or none) is released, never adopted.
TEST_F(Durability, AGoneOrReusedPidIsReleasedNotAdopted) {
  ASSERT_TRUE(d_.start(config()));
  pid_t child = fork();
  if (child == 0) {
    pause();
    _exit(0);
  }
  const std::string pid = std::to_string(child);
  {
    auto c = d_.client();
    call_ok(c, "io.budgetd.Agent.Allocate", {{"process", pid}});
  }
  d_.kill9();
  kill(child, SIGKILL);
  waitpid(child, nullptr, 0);
  ASSERT_TRUE(d_.start(config()));
  auto c = d_.client();
  Json t = call_ok(c, "io.budgetd.Agent.IsTracked", {{"process", pid}});
  EXPECT_EQ(t["tracked"], false) << "a pid that is gone is released at recovery";
}

// A corrupt database stops the start, with the path and the cause.
TEST_F(Durability, ACorruptDatabaseStopsTheStartWithAClearMessage) {
  fs::create_directories(state_dir());
  {
    std::ofstream f(state_dir() + "/budgetd.db", std::ios::binary);
    f << std::string(8192, 'x');
  }
  DaemonOptions o;
  o.wait_ready = false;
  o.pass_state_dir = false;
  Daemon d(o);
  ASSERT_TRUE(d.start(fmt_config("ack", state_dir())));
  ASSERT_TRUE(wait_until([&] { return !d.running(); }));
  EXPECT_NE(d.last_status(), 0);
  EXPECT_NE(d.log().find("budgetd.db"), std::string::npos) << d.log();
}

// The state directory cannot be created (its parent is a file): the start stops, saying so.
TEST_F(Durability, AnUnusableStateDirectoryStopsTheStart) {
  const std::string blocker = d_.dir() + "/not-a-directory";
  { std::ofstream(blocker) << "x"; }
  DaemonOptions o;
  o.wait_ready = false;
  o.pass_state_dir = false;
  Daemon d(o);
  ASSERT_TRUE(d.start(fmt_config("ack", blocker + "/state")));
  ASSERT_TRUE(wait_until([&] { return !d.running(); }));
  EXPECT_NE(d.last_status(), 0);
  EXPECT_NE(d.log().find("not-a-directory"), std::string::npos) << d.log();
}

// A full disk (here: the database's size cap) fails the reports that need durability with
// a named error and counts nothing; reads keep working, and writing resumes once there is
// room again (the cap raised by a reload).
TEST_F(Durability, AFullStoreRefusesDurableReportsAndKeepsServingReads) {
  ASSERT_TRUE(d_.start(config() + "max_size_mb = 1\n"));
  auto c = d_.client();
  Json labels = Json::object();
  for (int i = 0; i < 30; ++i) labels["l" + std::to_string(i)] = std::string(250, 'x');
  bool full = false;
  uint64_t counted = 0;
  for (int i = 0; i < 20000 && !full; ++i) {
    auto r = c.call("io.budgetd.Agent.RecordUsage", {{"process", "filler"}, {"tool_calls", 1}, {"labels", labels}});
    if (!r) {
      // The connection whose reply waited for the failed batch is closed: not acknowledged.
      c = d_.client();
      continue;
    }
    if (r->error) {
      ASSERT_EQ(*r->error, "io.budgetd.StorageFailed") << r->message();
      full = true;
    } else {
      ++counted;
    }
  }
  ASSERT_TRUE(full) << "the 1 MiB cap was never reached";
  // Reads keep working; a refused report counted nothing.
  Json before = call_ok(c, "io.budgetd.Agent.GetUsage", {{"process", "filler"}});
  call_err(c, "io.budgetd.Agent.RecordUsage", {{"process", "filler"}, {"tool_calls", 1}}, "io.budgetd.StorageFailed");
  EXPECT_EQ(call_ok(c, "io.budgetd.Agent.GetUsage", {{"process", "filler"}})["usage"]["tool_calls"],
            before["usage"]["tool_calls"]);
  EXPECT_GE(before["usage"]["tool_calls"].get<uint64_t>(), counted);
  // Room again: the queued writes go through and reports are accepted.
  d_.write_config(config() + "max_size_mb = 0\n");
  ASSERT_TRUE(d_.reload());
  EXPECT_TRUE(wait_until([&] {
    auto r = c.call("io.budgetd.Agent.RecordUsage", {{"process", "filler"}, {"tool_calls", 1}});
    return r && !r->error;
  }));
}

}  // namespace
}  // namespace budgetd::integration
