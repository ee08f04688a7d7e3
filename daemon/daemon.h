// The Manager: budgetd's one event loop and everything it owns (the systemd Manager
// pattern, STYLE.md section 1). It moves bytes between sockets and the engine and carries
// out what the engine decides; it decides nothing itself.
//
//   listener --accept--> Connection --message--> ipc::Service::handle --> Engine
//   after every batch of calls and every timer fire: Engine::advance(), drain the events
//   (journal, Watch subscribers, pidfd actions), re-arm the one deadline timer.
#pragma once

#include <uv.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "daemon/clock.h"
#include "daemon/config.h"
#include "daemon/connection.h"
#include "daemon/enforcer.h"
#include "daemon/listener.h"
#include "daemon/notify.h"
#include "daemon/process_watch.h"
#include "daemon/timer.h"
#include "ipc/service.h"
#include "lib/engine.h"

namespace budgetd::daemon {

struct Options {
  std::string config_path;      // "" = built-in defaults (nothing to reload)
  std::string socket_override;  // --socket: wins over the config's socket.path
};

// The socket path the daemon will use: --socket, else the config's, else
// default_socket_path().
std::string effective_socket_path(const Config& config, const Options& options);

class Manager final : public ipc::Hooks, public ConnectionHost {
 public:
  // `resources` is the registry the config was parsed with (custom resource names
  // interned in it); the engine adopts it, so the config's resource ids stay valid.
  Manager(Config config, ResourceRegistry resources, Options options);
  ~Manager() override;
  Manager(const Manager&) = delete;
  Manager& operator=(const Manager&) = delete;

  // Listens, tells systemd READY=1, serves until SIGTERM/SIGINT (or shutdown()), closes
  // every handle and the loop. Returns the process exit code.
  int run();
  // Begins a clean stop from inside the loop: STOPPING=1, stop accepting, close everything.
  void shutdown(std::string_view why);

  Engine& engine() { return engine_; }
  uv_loop_t* loop() { return &loop_.loop; }
  const std::string& socket_path() const { return listener_.socket().path; }

  // ---- ipc::Hooks -----------------------------------------------------------------------
  Result<void> reload() override;
  Result<void> pause(std::string_view process, bool resume) override;
  void watch(const ipc::WatchFilter& filter) override;
  void write_stats(ipc::JsonWriter& w) override;
  bool is_descendant(int32_t pid, int32_t ancestor) override;
  Result<void> track(std::string_view process) override;

  // ---- ConnectionHost -------------------------------------------------------------------
  ipc::Service::Outcome dispatch(Connection& c, std::string_view message,
                                 std::string& out) override;
  void after_batch(Connection& c) override;
  void closed(Connection& c) override;

 private:
  struct Loop {
    uv_loop_t loop{};
    Loop() { uv_loop_init(&loop); }
  };

  void apply_config(const Config& next, bool initial);
  ConnectionLimits connection_limits() const;
  void on_connection(uv_stream_t* server);
  void refuse_connection(Connection& c, std::string_view why);
  void on_process_exit(const std::string& id);
  // advance + drain + re-arm.
  void tick();
  void drain_events();
  void carry_out(const Event& e);
  void publish(const Event& e);
  bool matches(const ipc::WatchFilter& f, const Event& e);
  std::string status_text();
  void close_handles();
  static void on_signal(uv_signal_t* s, int signum);

  Loop loop_;
  MonotonicWallClock clock_;
  Config config_;
  Options options_;
  Engine engine_;
  ipc::Service service_;
  Listener listener_;
  ProcessWatch process_watch_;
  Enforcer enforcer_;
  DeadlineTimer timer_;
  Notifier notifier_;
  uv_signal_t sighup_{}, sigterm_{}, sigint_{};

  std::unordered_map<Connection*, std::unique_ptr<Connection>> connections_;
  std::size_t admitted_ = 0;
  std::unordered_map<uint32_t, std::size_t> per_uid_;
  std::vector<Connection*> watchers_;
  Connection* current_connection_ = nullptr;  // the caller, while Service::handle runs
  std::optional<uint32_t> operator_gid_;
  uint64_t next_connection_id_ = 1;

  // Stats.
  uint64_t sample_calls_ = 0;
  int64_t sample_usec_ = 0;
  double calls_per_second_ = 0;
  int64_t last_refusal_log_usec_ = 0;
  uint64_t refusals_unlogged_ = 0;

  bool stopping_ = false;
  bool loop_closed_ = false;
};

}  // namespace budgetd::daemon
