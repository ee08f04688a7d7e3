#include "tests/integration/daemon_fixture.h"

#include <fcntl.h>
#include <grp.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#ifndef BUDGETD_BINARY
#error "BUDGETD_BINARY must be defined (the path of the budgetd executable)"
#endif

extern char** environ;

namespace budgetd::integration {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

bool wait_until(const std::function<bool()>& pred, Ms timeout, Ms interval) {
  const auto deadline = Clock::now() + timeout;
  for (;;) {
    if (pred()) return true;
    if (Clock::now() >= deadline) return pred();
    std::this_thread::sleep_for(interval);  // a poll interval, not a wait for a condition
  }
}

namespace {

std::string tail(const std::string& text, std::size_t bytes = 4000) {
  return text.size() <= bytes ? text : "..." + text.substr(text.size() - bytes);
}

std::string describe_status(int status) {
  if (WIFEXITED(status)) return "exited with status " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status)) return std::string("killed by signal ") + strsignal(WTERMSIG(status));
  return "status " + std::to_string(status);
}

}  // namespace

Daemon::Daemon(DaemonOptions options) : options_(std::move(options)) {
  std::string tmpl = (fs::temp_directory_path() / "budgetd-it-XXXXXX").string();
  if (mkdtemp(tmpl.data()) == nullptr) {
    ADD_FAILURE() << "mkdtemp: " << std::strerror(errno);
    return;
  }
  dir_ = tmpl;
  chmod(dir_.c_str(), 0755);  // clients forked under another uid reach the socket
  socket_ = options_.socket_override.empty() ? dir_ + "/io.budgetd" : options_.socket_override;
  config_ = dir_ + "/budgetd.toml";
  log_ = dir_ + "/budgetd.log";
}

Daemon::~Daemon() {
  if (pid_ > 0) {
    auto r = stop();
    if (!r) ADD_FAILURE() << "at the end of the test: " << r.message();
  }
  if (dir_.empty()) return;
  const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
  if (info != nullptr && info->result() != nullptr && info->result()->Failed()) {
    std::fprintf(stderr, "budgetd test directory kept: %s\n--- tail of %s ---\n%s\n---\n",
                 dir_.c_str(), log_.c_str(), tail(log()).c_str());
    return;
  }
  std::error_code ec;
  fs::remove_all(dir_, ec);
}

void Daemon::write_config(std::string_view config_toml) {
  // Written to a temporary name and renamed: a reload never reads half a file.
  const std::string tmp = config_ + ".tmp";
  {
    std::ofstream f(tmp, std::ios::trunc);
    f << config_toml;
  }
  fs::rename(tmp, config_);
}

::testing::AssertionResult Daemon::start(std::string_view config_toml) {
  if (pid_ > 0)
    return ::testing::AssertionFailure() << "the daemon is already running (pid " << pid_ << ")";
  write_config(config_toml);
  return spawn();
}

::testing::AssertionResult Daemon::spawn() {
  if (dir_.empty()) return ::testing::AssertionFailure() << "no temporary directory";
  // Everything the child needs is built before fork(): after it, only exec-safe calls.
  std::vector<std::string> args = options_.command_prefix;
  args.push_back(BUDGETD_BINARY);
  args.push_back("--config");
  args.push_back(config_);
  if (options_.pass_socket) {
    args.push_back("--socket");
    args.push_back(socket_);
  }
  if (options_.pass_state_dir) {
    args.push_back("--state-dir");
    args.push_back(dir_ + "/state");
  }
  for (const auto& a : options_.extra_args) args.push_back(a);

  std::vector<std::pair<std::string, std::string>> env_set = {{"BUDGETD_LOG", "stderr"}};
  for (const auto& kv : options_.env) env_set.push_back(kv);
  std::vector<std::string> env;
  for (char** e = environ; *e != nullptr; ++e) {
    std::string_view entry(*e);
    std::string_view name = entry.substr(0, entry.find('='));
    bool drop = false;
    for (const auto& u : options_.unset_env) drop = drop || name == u;
    for (const auto& kv : env_set) drop = drop || name == kv.first;
    if (!drop) env.emplace_back(entry);
  }
  for (const auto& [k, v] : env_set) {
    std::erase_if(env, [&](const std::string& e) { return e.starts_with(k + "="); });
    env.push_back(k + "=" + v);
  }
  std::vector<char*> argv, envp;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  for (auto& e : env) envp.push_back(e.data());
  envp.push_back(nullptr);

  int log_fd = ::open(log_.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (log_fd < 0)
    return ::testing::AssertionFailure() << "open " << log_ << ": " << std::strerror(errno);
  const pid_t parent = getpid();
  const bool path_lookup = !options_.command_prefix.empty();
  pid_t pid = fork();
  if (pid < 0) {
    ::close(log_fd);
    return ::testing::AssertionFailure() << "fork: " << std::strerror(errno);
  }
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(127);
    // A fresh process group: a signal meant for the daemon never reaches the test.
    setpgid(0, 0);
    int devnull = ::open("/dev/null", O_RDONLY);
    if (devnull >= 0) dup2(devnull, 0);
    dup2(log_fd, 1);
    dup2(log_fd, 2);
    // Signals the test process blocked or ignored are not inherited as such.
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, nullptr);
    signal(SIGPIPE, SIG_DFL);
    if (path_lookup)
      execvpe(argv[0], argv.data(), envp.data());
    else
      execve(argv[0], argv.data(), envp.data());
    const char msg[] = "daemon_fixture: exec failed\n";
    (void)!write(2, msg, sizeof msg - 1);
    _exit(127);
  }
  ::close(log_fd);
  pid_ = pid;
  status_ = -1;
  if (!options_.wait_ready) return ::testing::AssertionSuccess();

  bool exited = false;
  std::string last_error;
  const bool ready = wait_until(
      [&] {
        if (!running()) {
          exited = true;
          return true;
        }
        auto c = VarlinkClient::connect(socket_, Ms{1000});
        if (c) return true;
        last_error = c.error();
        return false;
      },
      kStartTimeout);
  if (exited)
    return ::testing::AssertionFailure()
           << "budgetd " << describe_status(status_) << " before listening; log:\n"
           << tail(log());
  if (!ready) {
    kill9();
    return ::testing::AssertionFailure()
           << "budgetd did not accept on " << socket_ << " within " << kStartTimeout.count()
           << " ms (" << last_error << "); log:\n"
           << tail(log());
  }
  return ::testing::AssertionSuccess();
}

bool Daemon::running() {
  if (pid_ <= 0) return false;
  int status = 0;
  pid_t r = waitpid(pid_, &status, WNOHANG);
  if (r == pid_ || (r < 0 && errno == ECHILD)) {
    status_ = r == pid_ ? status : -1;
    pid_ = -1;
    return false;
  }
  return true;
}

bool Daemon::reap(Ms timeout) {
  return wait_until([&] { return !running(); }, timeout, Ms{1});
}

::testing::AssertionResult Daemon::stop() {
  if (pid_ <= 0) return ::testing::AssertionFailure() << "the daemon is not running";
  const pid_t pid = pid_;
  ::kill(pid, SIGTERM);
  if (!reap(kStopTimeout)) {
    kill9();
    return ::testing::AssertionFailure() << "budgetd (pid " << pid << ") did not exit within "
                                         << kStopTimeout.count() << " ms of SIGTERM; log:\n"
                                         << tail(log());
  }
  if (!WIFEXITED(status_) || WEXITSTATUS(status_) != 0)
    return ::testing::AssertionFailure() << "budgetd " << describe_status(status_)
                                         << " after SIGTERM (expected a clean exit 0); log:\n"
                                         << tail(log());
  return ::testing::AssertionSuccess();
}

void Daemon::kill9() {
  if (pid_ <= 0) return;
  const pid_t pid = pid_;
  ::kill(pid, SIGKILL);
  if (!reap(kStopTimeout)) ADD_FAILURE() << "budgetd (pid " << pid << ") survived SIGKILL";
}

::testing::AssertionResult Daemon::restart() {
  if (pid_ > 0)
    if (auto r = stop(); !r) return r;
  return spawn();
}

::testing::AssertionResult Daemon::reload() {
  if (pid_ <= 0) return ::testing::AssertionFailure() << "the daemon is not running";
  if (::kill(pid_, SIGHUP) != 0)
    return ::testing::AssertionFailure() << "kill SIGHUP: " << std::strerror(errno);
  auto c = try_client();
  if (!c) return ::testing::AssertionFailure() << "after SIGHUP: " << c.error();
  for (int i = 0; i < 2; ++i) {
    auto r = c->call("org.varlink.service.GetInfo", Json::object(), kWaitTimeout);
    if (!r || !r->ok())
      return ::testing::AssertionFailure()
             << "after SIGHUP: GetInfo failed: " << (r ? r->error.value_or("") : r.error());
  }
  return ::testing::AssertionSuccess();
}

std::expected<VarlinkClient, std::string> Daemon::try_client(Ms timeout) {
  return VarlinkClient::connect(socket_, timeout);
}

VarlinkClient Daemon::client() {
  auto c = try_client();
  if (!c) {
    ADD_FAILURE() << "connect " << socket_ << ": " << c.error();
    return VarlinkClient::adopt(-1);
  }
  return std::move(*c);
}

std::string Daemon::log() const {
  std::ifstream f(log_);
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}

bool Daemon::wait_for_log(std::string_view text, Ms timeout) const {
  return wait_until([&] { return log().find(text) != std::string::npos; }, timeout);
}

Json call_ok(VarlinkClient& c, std::string_view method, const Json& parameters) {
  auto r = c.call(method, parameters, kWaitTimeout);
  if (!r) {
    ADD_FAILURE() << method << " " << parameters.dump() << ": transport: " << r.error();
    return nullptr;
  }
  if (!r->ok()) {
    ADD_FAILURE() << method << " " << parameters.dump() << ": " << *r->error << " "
                  << r->parameters.dump();
    return nullptr;
  }
  return r->parameters;
}

Json call_err(VarlinkClient& c, std::string_view method, const Json& parameters,
              std::string_view error) {
  auto r = c.call(method, parameters, kWaitTimeout);
  if (!r) {
    ADD_FAILURE() << method << " " << parameters.dump() << ": transport: " << r.error();
    return nullptr;
  }
  if (r->error != std::optional<std::string>(std::string(error))) {
    ADD_FAILURE() << method << " " << parameters.dump() << ": expected " << error << ", got "
                  << r->error.value_or("success") << " " << r->parameters.dump();
    return nullptr;
  }
  return r->parameters;
}

int run_as(uid_t uid, gid_t gid, const std::function<int()>& body, Ms timeout) {
  std::fflush(nullptr);
  pid_t pid = fork();
  if (pid < 0) {
    ADD_FAILURE() << "fork: " << std::strerror(errno);
    return -1;
  }
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (setgroups(0, nullptr) != 0 || setgid(gid) != 0 || setuid(uid) != 0) {
      std::fprintf(stderr, "run_as: cannot become uid %u gid %u: %s\n", uid, gid,
                   std::strerror(errno));
      _exit(126);
    }
    int rc = 125;
    try {
      rc = body();
    } catch (const std::exception& e) {
      std::fprintf(stderr, "run_as: exception: %s\n", e.what());
    }
    std::fflush(nullptr);
    _exit(rc);
  }
  int status = 0;
  bool reaped = wait_until([&] { return waitpid(pid, &status, WNOHANG) == pid; }, timeout, Ms{1});
  if (!reaped) {
    ::kill(pid, SIGKILL);
    waitpid(pid, &status, 0);
    ADD_FAILURE() << "run_as(" << uid << "): the child did not exit within " << timeout.count()
                  << " ms";
    return -1;
  }
  if (!WIFEXITED(status)) {
    ADD_FAILURE() << "run_as(" << uid << "): the child " << describe_status(status);
    return -1;
  }
  return WEXITSTATUS(status);
}

long rss_kib(pid_t pid) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(f, line))
    if (line.starts_with("VmRSS:")) return std::strtol(line.c_str() + 6, nullptr, 10);
  return -1;
}

}  // namespace budgetd::integration
