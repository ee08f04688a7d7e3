// budgetd under systemd's protocols, without systemd as PID 1 (issue 4 sections 4 and 7):
// - the journal: a standalone systemd-journald (started here when none runs, and left
//   running), budgetd with BUDGETD_LOG=journal, and entries found with journalctl by their
//   structured fields, as an operator would find them;
// - socket activation through systemd-socket-activate (sd_listen_fds);
// - sd_notify messages read from a datagram socket the test owns as NOTIFY_SOCKET: READY=1,
//   STATUS=, RELOADING=1 with MONOTONIC_USEC=, STOPPING=1 and the watchdog.
// Nothing sleeps a fixed time: every wait polls a condition with a deadline.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "tests/integration/daemon_fixture.h"

namespace budgetd::integration {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

constexpr const char* kJournalDir = "/run/systemd/journal";
constexpr const char* kJournalSocket = "/run/systemd/journal/socket";
constexpr const char* kJournald = "/lib/systemd/systemd-journald";
// Serializes the start of journald between test processes running in parallel (ctest -j).
constexpr const char* kJournaldLock = "/run/systemd/journal/budgetd-tests.lock";

// daemon/journal.cc's MESSAGE_IDs: a contract with operators, never changed.
constexpr std::string_view kSoftTimeoutId = "6ff7cb48cbba403280ffa0bf6b9272ff";
constexpr std::string_view kTimeoutId = "fe6bbaa7c26946a8a8a911e503a1dc8a";
constexpr std::string_view kThresholdId = "dcd502bc9aa84ea09bc71c0e8232d3ed";
constexpr std::string_view kViolationId = "082f5b4f858a4238baf79f2c24c490d2";

// Journal lookups spawn journalctl: poll them less often than socket calls.
constexpr Ms kJournalPoll{100};
constexpr Ms kJournalTimeout{20'000};

std::string unique_id(std::string_view what) {
  return std::string(what) + "-" + std::to_string(getpid()) + "-" +
         std::to_string(std::chrono::system_clock::now().time_since_epoch().count());
}

// A fresh directory the test owns, removed at the end.
class TempDir {
 public:
  TempDir() {
    std::string tmpl = (fs::temp_directory_path() / "budgetd-sd-XXXXXX").string();
    if (mkdtemp(tmpl.data()) == nullptr) ADD_FAILURE() << "mkdtemp: " << std::strerror(errno);
    path_ = tmpl;
    chmod(path_.c_str(), 0755);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

sockaddr_un unix_address(const std::string& path) {
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  std::strncpy(a.sun_path, path.c_str(), sizeof a.sun_path - 1);
  return a;
}

// ---- journald --------------------------------------------------------------------------

// Someone receives on the journal socket (a leftover socket file refuses the connect).
bool journal_socket_live() {
  int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  sockaddr_un a = unix_address(kJournalSocket);
  bool live = connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
  close(fd);
  return live;
}

// journalctl's output for the matches, one JSON object per entry.
std::vector<Json> journal_entries(const std::vector<std::string>& matches) {
  std::string cmd = "journalctl --no-pager --merge -o json";
  for (const auto& m : matches) cmd += " '" + m + "'";
  cmd += " 2>/dev/null";
  std::vector<Json> out;
  FILE* p = popen(cmd.c_str(), "r");
  if (p == nullptr) return out;
  std::string line;
  char buf[8192];
  while (std::fgets(buf, sizeof buf, p) != nullptr) {
    line += buf;
    if (line.empty() || line.back() != '\n') continue;
    Json j = Json::parse(line, nullptr, false);
    if (j.is_object()) out.push_back(std::move(j));
    line.clear();
  }
  pclose(p);
  return out;
}

// Waits until journalctl finds an entry with all of `matches`; returns the first (null on
// timeout).
Json wait_for_entry(const std::vector<std::string>& matches, Ms timeout = kJournalTimeout) {
  Json found;
  wait_until(
      [&] {
        auto entries = journal_entries(matches);
        if (entries.empty()) return false;
        found = entries.front();
        return true;
      },
      timeout, kJournalPoll);
  return found;
}

// Starts systemd-journald, detached (its own session, stdio on /dev/null, no inherited fds,
// reparented away from the test), unless one already receives on the journal socket. It
// is left running: it is harmless, and the next test finds it.
::testing::AssertionResult ensure_journald() {
  std::error_code ec;
  fs::create_directories(kJournalDir, ec);
  if (ec)
    return ::testing::AssertionFailure() << "mkdir -p " << kJournalDir << ": " << ec.message();
  int lock = open(kJournaldLock, O_CREAT | O_RDWR | O_CLOEXEC, 0600);
  if (lock < 0)
    return ::testing::AssertionFailure()
           << "open " << kJournaldLock << ": " << std::strerror(errno);
  while (flock(lock, LOCK_EX) != 0 && errno == EINTR) {
  }
  struct Unlock {
    int fd;
    ~Unlock() { close(fd); }
  } unlock{lock};
  if (journal_socket_live()) return ::testing::AssertionSuccess();
  if (access(kJournald, X_OK) != 0)
    return ::testing::AssertionFailure()
           << kJournald << " is missing: install the systemd package (scripts/setup.sh)";
  // journald names its files by the machine id; a bare chroot may have none yet.
  struct stat st {};
  if (stat("/etc/machine-id", &st) != 0 || st.st_size == 0)
    if (std::system("systemd-machine-id-setup >/dev/null 2>&1") != 0)
      return ::testing::AssertionFailure()
             << "no /etc/machine-id, and systemd-machine-id-setup failed";

  std::fflush(nullptr);
  pid_t pid = fork();
  if (pid < 0) return ::testing::AssertionFailure() << "fork: " << std::strerror(errno);
  if (pid == 0) {
    setsid();
    if (fork() != 0) _exit(0);  // the daemon is the grandchild: nobody's child here
    if (chdir("/") != 0) _exit(127);
    int null = open("/dev/null", O_RDWR);
    dup2(null, 0);
    dup2(null, 1);
    dup2(null, 2);
    close_range(3, ~0U, 0);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, nullptr);
    execl(kJournald, kJournald, static_cast<char*>(nullptr));
    _exit(127);
  }
  waitpid(pid, nullptr, 0);
  if (!wait_until(journal_socket_live, kJournalTimeout, Ms{10}))
    return ::testing::AssertionFailure()
           << "systemd-journald did not come up on " << kJournalSocket;
  return ::testing::AssertionSuccess();
}

DaemonOptions journal_options() {
  DaemonOptions o;
  o.env = {{"BUDGETD_LOG", "journal"}};
  return o;
}

TEST(Systemd, SoftTimeoutIsAWarningInTheRealJournal) {
  ASSERT_TRUE(ensure_journald());
  Daemon d(journal_options());
  ASSERT_TRUE(d.start());
  auto c = d.client();
  const std::string id = unique_id("env-journal");
  call_ok(c, "io.budgetd.Agent.Allocate",
          {{"process", id}, {"quota", {{"soft_timeout_seconds", "1"}, {"timeout_seconds", "2"}}}});

  // journalctl BUDGETD_EVENT=soft_timeout BUDGETD_PROCESS=ID
  Json soft = wait_for_entry({"BUDGETD_EVENT=soft_timeout", "BUDGETD_PROCESS=" + id});
  ASSERT_TRUE(soft.is_object()) << "no soft_timeout entry for " << id
                                << " in the journal; daemon log:\n"
                                << d.log();
  EXPECT_EQ(soft.value("PRIORITY", ""), "4") << soft.dump();  // LOG_WARNING
  EXPECT_EQ(soft.value("MESSAGE_ID", ""), kSoftTimeoutId) << soft.dump();
  EXPECT_EQ(soft.value("SYSLOG_IDENTIFIER", ""), "budgetd") << soft.dump();
  EXPECT_EQ(soft.value("BUDGETD_RESOURCE", ""), "elapsed") << soft.dump();
  EXPECT_EQ(soft.value("BUDGETD_PATH", ""), "/") << soft.dump();
  EXPECT_EQ(soft.value("_PID", ""), std::to_string(d.pid())) << soft.dump();
  EXPECT_NE(soft.value("MESSAGE", "").find(id), std::string::npos) << soft.dump();

  // The hard timeout is an error, found by its reason: journalctl BUDGETD_REASON=timeout_exceeded.
  Json hard = wait_for_entry({"BUDGETD_REASON=timeout_exceeded", "BUDGETD_PROCESS=" + id});
  ASSERT_TRUE(hard.is_object()) << "no timeout_exceeded entry for " << id << "; daemon log:\n"
                                << d.log();
  EXPECT_EQ(hard.value("PRIORITY", ""), "3") << hard.dump();  // LOG_ERR
  EXPECT_EQ(hard.value("MESSAGE_ID", ""), kTimeoutId) << hard.dump();
  EXPECT_EQ(hard.value("BUDGETD_EVENT", ""), "timeout") << hard.dump();

  // Plain log lines went there too, not to stderr.
  Json listening = wait_for_entry({"SYSLOG_IDENTIFIER=budgetd", "_PID=" + std::to_string(d.pid())});
  ASSERT_TRUE(listening.is_object());
  EXPECT_EQ(d.log().find(id), std::string::npos) << d.log();
}

TEST(Systemd, ThresholdWarningsAndViolationsInTheRealJournal) {
  ASSERT_TRUE(ensure_journald());
  Daemon d(journal_options());
  ASSERT_TRUE(d.start());
  auto c = d.client();
  const std::string id = unique_id("env-threshold");
  call_ok(c, "io.budgetd.Agent.Allocate", {{"process", id}, {"quota", {{"max_llm_calls", "10"}}}});
  call_ok(c, "io.budgetd.Agent.RecordUsage", {{"process", id}, {"llm_calls", 8}});

  Json warn = wait_for_entry({"BUDGETD_EVENT=threshold_crossed", "BUDGETD_PROCESS=" + id});
  ASSERT_TRUE(warn.is_object()) << d.log();
  EXPECT_EQ(warn.value("PRIORITY", ""), "4") << warn.dump();
  EXPECT_EQ(warn.value("MESSAGE_ID", ""), kThresholdId) << warn.dump();
  EXPECT_EQ(warn.value("BUDGETD_RESOURCE", ""), "llm_calls") << warn.dump();
  EXPECT_EQ(warn.value("BUDGETD_USED", ""), "8") << warn.dump();
  EXPECT_EQ(warn.value("BUDGETD_LIMIT", ""), "10") << warn.dump();

  call_ok(c, "io.budgetd.Agent.RecordUsage", {{"process", id}, {"llm_calls", 2}});
  Json violation =
      wait_for_entry({"BUDGETD_REASON=max_llm_calls_exceeded", "BUDGETD_PROCESS=" + id});
  ASSERT_TRUE(violation.is_object()) << d.log();
  EXPECT_EQ(violation.value("PRIORITY", ""), "3") << violation.dump();
  EXPECT_EQ(violation.value("MESSAGE_ID", ""), kViolationId) << violation.dump();
  EXPECT_EQ(violation.value("BUDGETD_EVENT", ""), "violation") << violation.dump();
}

// ---- socket activation -----------------------------------------------------------------

TEST(Systemd, SocketActivationTakesThePassedSocket) {
  TempDir sockets;
  const std::string activated = sockets.path() + "/activated.sock";
  DaemonOptions o;
  o.command_prefix = {"systemd-socket-activate", "-l", activated, "-E", "BUDGETD_LOG=stderr"};
  o.pass_socket = false;
  o.socket_override = activated;
  Daemon d(o);
  // The configured path must stay unused: the socket comes from sd_listen_fds().
  const std::string configured = d.dir() + "/configured.sock";
  ASSERT_TRUE(d.start("[socket]\npath = \"" + configured + "\"\n"));

  auto c = d.client();
  Json info = call_ok(c, "org.varlink.service.GetInfo");
  ASSERT_TRUE(info.is_object());
  EXPECT_EQ(info["product"], "budgetd");
  // systemd-socket-activate exec'd budgetd in place: the pid is the daemon's.
  std::error_code ec;
  EXPECT_EQ(fs::read_symlink("/proc/" + std::to_string(d.pid()) + "/exe", ec).filename(),
            "budgetd");

  EXPECT_TRUE(d.wait_for_log("(socket activation)")) << d.log();
  EXPECT_NE(d.log().find("listening on " + activated), std::string::npos) << d.log();
  struct stat st {};
  EXPECT_NE(lstat(configured.c_str(), &st), 0) << "budgetd created " << configured;
  EXPECT_EQ(errno, ENOENT);

  // More connections on the same socket.
  auto c2 = d.client();
  Json alloc = call_ok(c2, "io.budgetd.Agent.Allocate", {{"process", "env-activated"}});
  EXPECT_EQ(call_ok(c, "io.budgetd.Agent.IsTracked", {{"process", "env-activated"}})["tracked"],
            true);

  ASSERT_TRUE(d.stop());
  // The socket is systemd's: budgetd leaves it in place.
  EXPECT_EQ(lstat(activated.c_str(), &st), 0);
  EXPECT_TRUE(S_ISSOCK(st.st_mode));
}

// ---- sd_notify -------------------------------------------------------------------------

// The receiving end of NOTIFY_SOCKET: every datagram, in order, with a read cursor.
class NotifySocket {
 public:
  explicit NotifySocket(const std::string& path) : path_(path) {
    fd_ = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    sockaddr_un a = unix_address(path);
    if (fd_ < 0 || bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0)
      ADD_FAILURE() << "notify socket " << path << ": " << std::strerror(errno);
  }
  ~NotifySocket() {
    if (fd_ >= 0) close(fd_);
  }
  const std::string& path() const { return path_; }

  // The next message at or after the cursor for which `pred` holds; moves the cursor past
  // it. nullopt on timeout.
  std::optional<std::string> wait_for(const std::function<bool(const std::string&)>& pred,
                                      Ms timeout = kWaitTimeout) {
    const auto deadline = Clock::now() + timeout;
    for (;;) {
      while (cursor_ < messages_.size()) {
        const std::string& m = messages_[cursor_++];
        if (pred(m)) return m;
      }
      auto left = std::chrono::duration_cast<Ms>(deadline - Clock::now()).count();
      if (left <= 0) return std::nullopt;
      pollfd p{fd_, POLLIN, 0};
      if (poll(&p, 1, static_cast<int>(left)) <= 0) continue;
      char buf[4096];
      ssize_t n = recv(fd_, buf, sizeof buf, MSG_DONTWAIT);
      if (n > 0) messages_.emplace_back(buf, static_cast<std::size_t>(n));
    }
  }
  std::optional<std::string> wait_for(std::string_view field, Ms timeout = kWaitTimeout) {
    return wait_for([&](const std::string& m) { return has_line(m, field); }, timeout);
  }
  // Every message received so far.
  std::string all() const {
    std::string s;
    for (const auto& m : messages_) s += "[" + m + "] ";
    return s;
  }

  // `m` has a line that is `field` ("READY=1") or starts with it ("STATUS=").
  static bool has_line(std::string_view m, std::string_view field) {
    std::size_t pos = 0;
    while (pos <= m.size()) {
      std::size_t eol = m.find('\n', pos);
      std::string_view line =
          m.substr(pos, eol == std::string_view::npos ? std::string_view::npos : eol - pos);
      if (field.ends_with('=') ? line.starts_with(field) : line == field) return true;
      if (eol == std::string_view::npos) break;
      pos = eol + 1;
    }
    return false;
  }
  // The value of `key=` in `m`, or "".
  static std::string value(std::string_view m, std::string_view key) {
    std::string k = std::string(key) + "=";
    std::size_t pos = m.find(k);
    if (pos == std::string_view::npos || (pos > 0 && m[pos - 1] != '\n')) return "";
    std::size_t start = pos + k.size();
    std::size_t eol = m.find('\n', start);
    return std::string(
        m.substr(start, eol == std::string_view::npos ? std::string_view::npos : eol - start));
  }

 private:
  std::string path_;
  int fd_ = -1;
  std::vector<std::string> messages_;
  std::size_t cursor_ = 0;
};

uint64_t monotonic_usec_now() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1'000'000 + static_cast<uint64_t>(ts.tv_nsec) / 1000;
}

// RELOADING=1 with a MONOTONIC_USEC= of the moment, then READY=1.
void expect_reload_notifications(NotifySocket& n, uint64_t before_usec) {
  auto reloading = n.wait_for("RELOADING=1");
  ASSERT_TRUE(reloading) << n.all();
  const std::string usec = NotifySocket::value(*reloading, "MONOTONIC_USEC");
  ASSERT_FALSE(usec.empty()) << *reloading;
  const uint64_t at = std::stoull(usec);
  EXPECT_GE(at, before_usec) << *reloading;
  EXPECT_LE(at, monotonic_usec_now()) << *reloading;
  EXPECT_TRUE(n.wait_for("READY=1")) << "no READY=1 after RELOADING=1: " << n.all();
}

TEST(Systemd, NotifiesReadyStatusReloadingAndStopping) {
  TempDir tmp;
  NotifySocket n(tmp.path() + "/notify.sock");
  DaemonOptions o;
  o.env = {{"NOTIFY_SOCKET", n.path()}};
  o.wait_ready = false;
  Daemon d(o);
  ASSERT_TRUE(d.start("status_interval_ms = 50\n"));

  // READY=1 comes once the daemon listens: one connect right after it succeeds.
  auto ready = n.wait_for("READY=1", kStartTimeout);
  ASSERT_TRUE(ready) << n.all() << "\nlog:\n" << d.log();
  auto first = d.try_client(Ms{1000});
  ASSERT_TRUE(first) << "READY=1 before the socket accepted: " << first.error();
  EXPECT_TRUE(NotifySocket::has_line(*ready, "STATUS=")) << *ready;

  // STATUS= is refreshed, and tells how many processes are tracked.
  auto c = d.client();
  call_ok(c, "io.budgetd.Agent.Allocate", {{"process", "env-status"}});
  auto status = n.wait_for([](const std::string& m) {
    return NotifySocket::value(m, "STATUS").starts_with("1 process");
  });
  ASSERT_TRUE(status) << n.all();
  EXPECT_NE(status->find("calls/s"), std::string::npos) << *status;

  // SIGHUP: RELOADING=1 with MONOTONIC_USEC=, then READY=1.
  uint64_t before = monotonic_usec_now();
  ASSERT_EQ(kill(d.pid(), SIGHUP), 0);
  expect_reload_notifications(n, before);

  // Admin.Reload: the same.
  before = monotonic_usec_now();
  call_ok(c, "io.budgetd.Admin.Reload");
  expect_reload_notifications(n, before);

  // A bad file: the reload fails, the old configuration stays, and systemd still hears READY=1.
  d.write_config("status_interval_ms = \"often\"\n");
  before = monotonic_usec_now();
  call_err(c, "io.budgetd.Admin.Reload", Json::object(), "io.budgetd.ReloadFailed");
  expect_reload_notifications(n, before);
  EXPECT_EQ(call_ok(c, "io.budgetd.Agent.IsTracked", {{"process", "env-status"}})["tracked"], true);

  // SIGTERM: STOPPING=1, then a clean exit.
  ASSERT_TRUE(d.stop());
  EXPECT_TRUE(n.wait_for("STOPPING=1", Ms{2000})) << n.all();
}

TEST(Systemd, WatchdogPingsAtHalfTheInterval) {
  TempDir tmp;
  NotifySocket n(tmp.path() + "/notify.sock");
  DaemonOptions o;
  o.env = {{"NOTIFY_SOCKET", n.path()}, {"WATCHDOG_USEC", "200000"}};
  o.unset_env.push_back("WATCHDOG_PID");
  Daemon d(o);
  const auto spawned = Clock::now();
  ASSERT_TRUE(d.start());
  EXPECT_TRUE(d.wait_for_log("WATCHDOG=1 every 100 ms")) << d.log();

  for (int i = 0; i < 3; ++i)
    ASSERT_TRUE(n.wait_for("WATCHDOG=1")) << "ping " << i << ": " << n.all();
  // Every 100 ms, not more often: the third ping cannot come before 300 ms after the start
  // (the bound leaves room for coarse timers; receive times are not used, a slow reader
  // would see pings bunched together).
  EXPECT_GE(Clock::now() - spawned, Ms{250});
}

TEST(Systemd, NoWatchdogForAnotherPid) {
  TempDir tmp;
  NotifySocket n(tmp.path() + "/notify.sock");
  DaemonOptions o;
  // WATCHDOG_PID names the process systemd watches; pid 1 is not budgetd.
  o.env = {{"NOTIFY_SOCKET", n.path()}, {"WATCHDOG_USEC", "200000"}, {"WATCHDOG_PID", "1"}};
  Daemon d(o);
  ASSERT_TRUE(d.start());
  // The watchdog is set up before "listening on" is logged: its absence there is final.
  ASSERT_TRUE(d.wait_for_log("listening on")) << d.log();
  EXPECT_EQ(d.log().find("watchdog"), std::string::npos) << d.log();
  ASSERT_TRUE(n.wait_for("READY=1"));
}

}  // namespace
}  // namespace budgetd::integration
