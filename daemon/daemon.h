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
#include <deque>
#include <expected>
#include <memory>
#include <random>
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
#include "daemon/store.h"
#include "daemon/timer.h"
#include "ipc/service.h"
#include "lib/engine.h"

namespace budgetd::daemon {

struct Options {
  std::string config_path;      // "" = built-in defaults (nothing to reload)
  std::string socket_override;  // --socket: wins over the config's socket.path
  std::string state_dir_override;  // --state-dir: wins over the config's store.state_dir
};

// The state directory the store will use: --state-dir, else the config's, else
// default_state_dir().
std::string effective_state_dir(const Config& config, const Options& options);

// An idempotency key answered before is replayed for this long at most, and at most this
// many keys are remembered (the oldest are forgotten first), so retries cannot grow memory
// without bound.
inline constexpr std::size_t kMaxRememberedReplies = 1'000'000;

// In durability "batch" and "none" replies do not wait for the store, unless the writer
// falls this many ledger records behind: then replies wait as in "ack" until it catches
// up, so a sustained overload slows the callers instead of growing memory and stretching
// "durable within batch_window" to seconds.
inline constexpr std::size_t kMaxUndurableRecords = 20'000;

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

  // Opens the store and restores what it holds (recovery): the engine's state, OS pids
  // watched again (a pid that is gone or reused is released, never adopted), idempotency
  // replies. Call once, before run(). An error names the database and the cause.
  std::expected<void, std::string> open_store();
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
  void append(LedgerRecord record) override;
  std::optional<std::string> idempotent_reply(std::string_view method, uint32_t uid,
                                              std::string_view key) override;
  void remember_reply(std::string_view method, uint32_t uid, std::string_view key,
                      std::string_view reply) override;
  Result<void> need_durable() override;
  const PriceTable& prices() override { return config_.prices; }
  LedgerReader* ledger() override { return store_ ? &store_->ledger() : nullptr; }

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
  void ledger_outcome(const Event& e);
  void publish(const Event& e);
  bool matches(const ipc::WatchFilter& f, const Event& e);
  std::string status_text();
  void close_handles();
  static void on_signal(uv_signal_t* s, int signum);

  // ---- The store (durability) -----------------------------------------------------------
  // What the engine and the calls changed since the last submit, handed to the store (at
  // the end of every loop iteration, and before a stop).
  void submit_changes();
  void on_commit(uint64_t seq, const StoreError* error);
  void recover_processes(const LoadedState& loaded);
  void forget_old_replies();
  static std::string reply_key(std::string_view method, uint32_t uid, std::string_view key);

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

  std::unique_ptr<Store> store_;
  StoreWrite pending_write_;     // ledger records, replies, pid identities for the next submit
  bool call_durable_ = false;    // the call being dispatched needs its batch on disk (ack)
  // Held replies wait for an epoch: the number of the submission that carries their change
  // (one per loop iteration). epochs_ maps submitted epochs to store batch seqs.
  uint64_t next_epoch_ = 1;
  uint64_t durable_epoch_ = 0;
  bool epoch_needed_ = false;
  struct Submitted {
    uint64_t epoch, seq;
    std::size_t records;  // ledger records in it
  };
  std::deque<Submitted> epochs_;
  std::size_t undurable_records_ = 0;  // ledger records submitted and not yet committed
  bool store_failed_ = false;    // the last batch failed: durable calls are refused
  std::string store_error_;
  std::vector<Connection*> held_;  // connections with replies waiting for the disk
  uv_check_t submit_check_{};      // after each loop iteration: submit what it changed
  uv_timer_t store_retry_{};       // while failed: retries the queued writes
  bool store_handles_ = false;
  struct Remembered {
    std::string reply;
    TimePoint at;
  };
  std::unordered_map<std::string, Remembered> replies_;
  std::deque<std::pair<TimePoint, std::string>> reply_order_;
  std::mt19937_64 guid_rng_;

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
