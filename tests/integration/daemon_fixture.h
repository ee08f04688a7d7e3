// The harness of the integration tests: starts the real budgetd binary on a socket in a
// temporary directory, with a configuration the test writes as TOML text, and talks to it
// with the C++ varlink client.
//
//   Daemon d;                                  // or Daemon d(DaemonOptions{...})
//   ASSERT_TRUE(d.start("[bounds]\nmax_processes = 5\n"));
//   auto c = d.client();
//   Json usage = call_ok(c, "io.budgetd.Agent.GetUsage", {{"process", "env-1"}});
//   ASSERT_TRUE(d.stop());                     // SIGTERM; exit code 0 within the deadline
//
// What the harness guarantees:
// - The binary is BUDGETD_BINARY (a compile definition: $<TARGET_FILE:budgetd>), run as
//   `budgetd --config DIR/budgetd.toml --socket DIR/io.budgetd --state-dir DIR/state
//   [extra args]` with
//   BUDGETD_LOG=stderr (unless options say otherwise); its stdout and stderr go to
//   DIR/budgetd.log, which log() reads.
// - start() returns once connect() on the socket succeeds (polled every few ms, with a
//   deadline), or fails with the log when the daemon exits or the deadline passes. Nothing
//   sleeps a fixed time (STYLE.md section 6).
// - The daemon is killed if the test process dies (PR_SET_PDEATHSIG), and the destructor
//   stops a daemon still running with stop(), adding a test failure unless it exits 0. So
//   every test checks the clean shutdown without asking.
// - DIR is mode 0755 and is removed by the destructor, unless the test failed (its path
//   is printed, with the tail of the log).
//
// The tests are single threaded: run_as() forks.
#pragma once

#include <gtest/gtest.h>
#include <sys/types.h>

#include <chrono>
#include <expected>
#include <functional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "clients/cpp/varlink_client.h"

namespace budgetd::integration {

using client::Json;
using client::Reply;
using client::VarlinkClient;
using Ms = std::chrono::milliseconds;

// Generous deadlines: CI runs on 2 cores, under sanitizers sometimes.
inline constexpr Ms kStartTimeout{20'000};
inline constexpr Ms kStopTimeout{20'000};
inline constexpr Ms kWaitTimeout{10'000};

// Polls `pred` every `interval` until it returns true (true) or `timeout` passes (false;
// pred is asked one last time at the deadline).
bool wait_until(const std::function<bool()>& pred, Ms timeout = kWaitTimeout, Ms interval = Ms{2});

struct DaemonOptions {
  // Arguments appended after --config and --socket.
  std::vector<std::string> extra_args;
  // Environment variables set for the daemon, on top of the test's environment
  // (NOTIFY_SOCKET, LISTEN_FDS...). BUDGETD_LOG=stderr is set first; an entry here wins.
  std::vector<std::pair<std::string, std::string>> env;
  // Environment variables removed from the daemon's environment (NOTIFY_SOCKET, ...).
  std::vector<std::string> unset_env = {"NOTIFY_SOCKET", "LISTEN_FDS", "LISTEN_PID",
                                        "LISTEN_FDNAMES"};
  // A command the daemon is run under, such as {"systemd-socket-activate", "-l", PATH}:
  // argv becomes prefix + {BUDGETD_BINARY, args...}. It must exec the daemon in place
  // (pid() is the wrapper's pid otherwise).
  std::vector<std::string> command_prefix;
  // Pass --socket DIR/io.budgetd (false: the config's or systemd's socket is used; the
  // readiness poll still connects to socket_path(), see socket_override).
  bool pass_socket = true;
  // Pass --state-dir DIR/state, so each daemon keeps its durable state in its own temporary
  // directory (false: the config's store.state_dir, or the default, is used).
  bool pass_state_dir = true;
  // When non-empty, the socket start() waits for and client() connects to.
  std::string socket_override;
  // Wait for the socket to accept in start() (false: start() returns once the process runs).
  bool wait_ready = true;
};

class Daemon {
 public:
  explicit Daemon(DaemonOptions options = {});
  ~Daemon();
  Daemon(const Daemon&) = delete;
  Daemon& operator=(const Daemon&) = delete;

  // Writes `config_toml` to config_path() and starts the daemon; see the header comment.
  ::testing::AssertionResult start(std::string_view config_toml = "");
  // SIGTERM, then waits for the exit (deadline kStopTimeout; SIGKILL after it). Success
  // means the process exited by itself with status 0.
  ::testing::AssertionResult stop();
  // SIGKILL and reap (a crash).
  void kill9();
  // stop(), then start() with the same configuration file (rewrite it with
  // write_config() first to change it).
  ::testing::AssertionResult restart();
  // SIGHUP, and returns once the daemon's loop handled it: two round trips of
  // org.varlink.service.GetInfo on a new connection (the signal wakes the loop, so the
  // poll that answers the first call sees it, and the second call's poll comes after).
  // It says nothing about whether the reload succeeded: ask the daemon, or grep log().
  ::testing::AssertionResult reload();
  // Replaces the configuration file (for reload() or restart()).
  void write_config(std::string_view config_toml);

  // A connection; on failure a test failure is added and a closed client (every call
  // fails) is returned.
  VarlinkClient client();
  std::expected<VarlinkClient, std::string> try_client(Ms timeout = Ms{5000});

  bool running();  // the process has not exited (reaps it if it has)
  pid_t pid() const { return pid_; }
  const std::string& dir() const { return dir_; }
  const std::string& socket_path() const { return socket_; }
  const std::string& config_path() const { return config_; }
  const std::string& log_path() const { return log_; }
  // Everything the daemon wrote to stdout and stderr so far.
  std::string log() const;
  // Waits until log() contains `text`.
  bool wait_for_log(std::string_view text, Ms timeout = kWaitTimeout) const;
  // The exit status of the last process (as from waitpid), or -1 while it runs / before.
  int last_status() const { return status_; }

 private:
  ::testing::AssertionResult spawn();
  // Waits for the exit until the deadline; true once reaped.
  bool reap(Ms timeout);

  DaemonOptions options_;
  std::string dir_, socket_, config_, log_;
  pid_t pid_ = -1;
  int status_ = -1;
};

// A call that must succeed: adds a test failure (with the error and message) and returns
// null when the transport fails or the reply is an error.
Json call_ok(VarlinkClient& c, std::string_view method, const Json& parameters = Json::object());
// A call that must fail with `error`: returns the error's parameters (null otherwise, with a
// test failure).
Json call_err(VarlinkClient& c, std::string_view method, const Json& parameters,
              std::string_view error);

// Forks a child that takes gid `gid` (no supplementary groups) and uid `uid`, runs `body`
// and exits with its result. Returns the child's exit code, or -1 (with a test failure)
// when it did not exit normally within `timeout` (it is killed then). `body` must not use
// gtest assertions: report through the exit code (and stderr).
int run_as(uid_t uid, gid_t gid, const std::function<int()>& body, Ms timeout = Ms{30'000});

// VmRSS of a process from /proc/PID/status, in KiB (-1 if unreadable).
long rss_kib(pid_t pid);

}  // namespace budgetd::integration
