#include "daemon/daemon.h"

#include <fmt/core.h>
#include <signal.h>

#include <algorithm>
#include <array>
#include <cstring>

#include "daemon/journal.h"
#include "daemon/procfs.h"
#include "ipc/methods.h"

#ifndef BUDGETD_VERSION
#define BUDGETD_VERSION "0.0.0"
#endif

namespace budgetd::daemon {

namespace {

// The size cap in SQLite pages (the default page size, 4096 bytes, which the store keeps).
uint64_t page_limit(const StoreConfig& c) { return c.max_size_mb * 1024 * 1024 / 4096; }


// The engine takes the process, thread and hold bounds from the [bounds] section.
EngineConfig engine_config_of(const Config& c) {
  EngineConfig e = c.engine;
  e.max_processes = c.bounds.max_processes;
  e.max_threads = c.bounds.max_threads;
  e.max_holds = c.bounds.max_holds;
  return e;
}

ipc::ServiceInfo service_info() {
  ipc::ServiceInfo info;
  info.version = BUDGETD_VERSION;
  return info;
}

// Refused connections are logged at most once a second, with how many were not.
constexpr int64_t kRefusalLogIntervalUsec = 1'000'000;

}  // namespace

std::string effective_state_dir(const Config& config, const Options& options) {
  if (!options.state_dir_override.empty()) return options.state_dir_override;
  if (!config.state_dir.empty()) return config.state_dir;
  return default_state_dir();
}

std::string effective_socket_path(const Config& config, const Options& options) {
  if (!options.socket_override.empty()) return options.socket_override;
  if (!config.socket.path.empty()) return config.socket.path;
  return default_socket_path();
}

Manager::Manager(Config config, ResourceRegistry resources, Options options)
    : config_(std::move(config)),
      options_(std::move(options)),
      engine_(clock_, engine_config_of(config_)),
      service_(service_info()),
      listener_(&loop_.loop),
      process_watch_(&loop_.loop, [this](const std::string& id) { on_process_exit(id); }),
      enforcer_(&loop_.loop, process_watch_),
      timer_(&loop_.loop, clock_, [this] { tick(); }),
      notifier_(&loop_.loop, [this] { return status_text(); }) {
  // A client that closes while its reply is being written must not kill the daemon.
  signal(SIGPIPE, SIG_IGN);
  engine_.resources() = std::move(resources);
  ipc::register_all(service_);
  for (uv_signal_t* s : {&sighup_, &sigterm_, &sigint_}) {
    uv_signal_init(&loop_.loop, s);
    s->data = this;
  }
  sample_usec_ = monotonic_usec();
  // Eight words of entropy, not one: ledger ids must not repeat across restarts.
  std::random_device entropy;
  std::seed_seq seed{entropy(), entropy(), entropy(), entropy(), entropy(), entropy(), entropy(), entropy()};
  guid_rng_.seed(seed);
  apply_config(config_, true);
}

Manager::~Manager() {
  if (loop_closed_) return;
  // run() was not called, or failed early: close what was opened so the loop can close.
  close_handles();
  uv_run(&loop_.loop, UV_RUN_DEFAULT);
  if (uv_loop_close(&loop_.loop) != 0) log_error("event loop not closed: handles still open");
}

// ---- Configuration --------------------------------------------------------------------

ConnectionLimits Manager::connection_limits() const {
  ConnectionLimits l;
  l.framer.max_message_bytes = config_.bounds.max_message_bytes;
  l.framer.max_depth = config_.bounds.max_json_depth;
  l.max_pending_reply_bytes = config_.bounds.max_pending_reply_bytes;
  return l;
}

void Manager::apply_config(const Config& next, bool initial) {
  if (!initial) engine_.reconfigure(engine_config_of(next));
  for (const auto& t : next.templates)
    if (auto r = engine_.set_template(t); !r)
      log_error("config: {} {}: {}", template_kind_name(t.kind), t.name, r.error().message());
  for (const auto& s : next.scopes)
    if (auto r = engine_.set_limits(s.path, s.update); !r)
      log_error("config: scope {}: {}", s.path, r.error().message());

  RateLimiter& rl = engine_.rate_limiter();
  rl.set_default_config(next.rate_limits.default_config);
  if (!initial) {
    // Overrides that came from the old file and are gone from the new one are dropped;
    // overrides set live by an operator (Admin.SetRateLimit) are not the file's to remove.
    for (const auto& [user, c] : config_.rate_limits.users)
      if (!next.rate_limits.users.contains(user)) (void)rl.clear_user_limits(user);
    for (const auto& [endpoint, c] : config_.rate_limits.endpoints)
      if (!next.rate_limits.endpoints.contains(endpoint)) (void)rl.clear_endpoint_limits(endpoint);
  }
  for (const auto& [user, c] : next.rate_limits.users)
    if (auto r = rl.set_user_limits(user, c); !r)
      log_error("config: rate limit for user {}: {}", user, r.error().message());
  for (const auto& [endpoint, c] : next.rate_limits.endpoints)
    if (auto r = rl.set_endpoint_limits(endpoint, c); !r)
      log_error("config: rate limit for endpoint {}: {}", endpoint, r.error().message());

  LogLevel level = LogLevel::info;
  if (!parse_log_level(next.log_level, level))
    log_warning("config: unknown log_level \"{}\"; using info", next.log_level);
  set_log_level(level);

  operator_gid_.reset();
  if (!next.socket.operator_group.empty()) {
    if (auto gid = resolve_group(next.socket.operator_group))
      operator_gid_ = *gid;
    else
      log_warning("config: operator_group: {}; only root is an operator", gid.error());
  }

  if (!initial) {
    const SocketConfig& old = config_.socket;
    if (old.path != next.socket.path || old.mode != next.socket.mode ||
        old.group != next.socket.group)
      log_warning("config: socket path, mode and group take effect at the next start");
    for (auto& [p, c] : connections_) {
      c->set_max_pending_reply_bytes(next.bounds.max_pending_reply_bytes);
      c->peer().is_operator = is_operator(c->credentials(), operator_gid_);
    }
    notifier_.set_status_interval(next.status_interval_ms);
  }
}

Result<void> Manager::reload() {
  notifier_.reloading();
  Result<void> result;
  if (options_.config_path.empty()) {
    log_info("reload: no configuration file was given; nothing to re-read");
  } else {
    log_info("reload: reading {}", options_.config_path);
    auto next = load_config(options_.config_path, engine_.resources());
    if (!next) {
      std::string why;
      for (const auto& e : next.error()) {
        log_error("reload: {}", e.to_string());
        if (why.size() < 1024) why += (why.empty() ? "" : "; ") + e.to_string();
      }
      log_error("reload: {} error(s); the running configuration is kept", next.error().size());
      result = fail(Errc::invalid_argument,
                    "configuration not reloaded (the running one is kept): " + why);
    } else {
      apply_config(*next, false);
      if (store_) {
        const StoreConfig& was = config_.store;
        if (was.durability != next->store.durability || was.batch_window_ms != next->store.batch_window_ms ||
            was.retention_days != next->store.retention_days ||
            effective_state_dir(*next, options_) != effective_state_dir(config_, options_))
          log_warning("config: store.state_dir, durability, batch_window_ms and retention_days take "
                      "effect at the next start");
        if (was.max_size_mb != next->store.max_size_mb)
          store_->set_page_limit(page_limit(next->store));
      }
      config_ = std::move(*next);
      log_info("reload: configuration applied; usage kept");
    }
  }
  notifier_.ready();
  tick();  // new limits may have fired events or moved deadlines
  return result;
}

// ---- Running --------------------------------------------------------------------------

int Manager::run() {
  ListenSpec spec{effective_socket_path(config_, options_), config_.socket.mode,
                  config_.socket.group};
  // Only a path somebody asked for is worth a warning when systemd passes another.
  spec.explicit_path = !options_.socket_override.empty() || !config_.socket.path.empty();
  auto sock = open_listen_socket(spec);
  if (!sock) {
    log_error("cannot listen: {}", sock.error());
    close_handles();
    uv_run(&loop_.loop, UV_RUN_DEFAULT);
    loop_closed_ = uv_loop_close(&loop_.loop) == 0;
    return 1;
  }
  for (const auto& w : sock->warnings) log_warning("{}", w);
  const bool activated = sock->activated;
  if (auto r = listener_.start(std::move(*sock), [this](uv_stream_t* s) { on_connection(s); });
      !r) {
    log_error("cannot listen: {}", r.error());
    close_handles();
    uv_run(&loop_.loop, UV_RUN_DEFAULT);
    loop_closed_ = uv_loop_close(&loop_.loop) == 0;
    return 1;
  }
  uv_signal_start(&sighup_, on_signal, SIGHUP);
  uv_signal_start(&sigterm_, on_signal, SIGTERM);
  uv_signal_start(&sigint_, on_signal, SIGINT);
  notifier_.start(config_.status_interval_ms);
  timer_.arm(engine_.next_deadline());
  log_info("budgetd {} listening on {}{}", BUDGETD_VERSION, listener_.socket().path,
           activated ? " (socket activation)" : "");
  notifier_.ready();

  uv_run(&loop_.loop, UV_RUN_DEFAULT);

  // shutdown() closed every handle; their close callbacks ran before uv_run returned.
  int rc = uv_loop_close(&loop_.loop);
  if (rc != 0) {
    uv_walk(
        &loop_.loop,
        [](uv_handle_t* h, void*) {
          log_error("handle still open at exit: {}", uv_handle_type_name(h->type));
        },
        nullptr);
    log_error("event loop did not close: {}", uv_err_name(rc));
    return 1;
  }
  loop_closed_ = true;
  log_info("budgetd stopped");
  return 0;
}

void Manager::shutdown(std::string_view why) {
  if (stopping_) return;
  stopping_ = true;
  notifier_.stopping();
  log_info("stopping: {}", why);
  close_handles();
}

void Manager::close_handles() {
  stopping_ = true;
  if (store_) {
    // What was acknowledged is on disk already; this makes the rest durable too, so a
    // clean stop loses nothing, and releases the replies still waiting for the disk.
    submit_changes();
    store_->flush();
    for (Connection* c : held_) c->release_output(durable_epoch_);
    held_.clear();
    store_.reset();  // stops the writer and closes its async handle
  }
  if (store_handles_) {
    store_handles_ = false;
    uv_close(reinterpret_cast<uv_handle_t*>(&submit_check_), nullptr);
    uv_close(reinterpret_cast<uv_handle_t*>(&store_retry_), nullptr);
  }
  listener_.close();
  for (auto& [p, c] : connections_) c->close();
  process_watch_.close_all();
  enforcer_.close_all();
  timer_.close();
  notifier_.close();
  for (uv_signal_t* s : {&sighup_, &sigterm_, &sigint_})
    if (!uv_is_closing(reinterpret_cast<uv_handle_t*>(s)))
      uv_close(reinterpret_cast<uv_handle_t*>(s), nullptr);
}

void Manager::on_signal(uv_signal_t* s, int signum) {
  auto* self = static_cast<Manager*>(s->data);
  if (signum == SIGHUP) {
    (void)self->reload();
  } else {
    self->shutdown(signum == SIGTERM ? "SIGTERM" : "SIGINT");
  }
}

// ---- Connections ----------------------------------------------------------------------

void Manager::on_connection(uv_stream_t* server) {
  auto owned =
      std::make_unique<Connection>(&loop_.loop, *this, connection_limits(), next_connection_id_++);
  Connection* c = owned.get();
  connections_.emplace(c, std::move(owned));
  if (auto r = c->accept(server); !r) {
    log_warning("connection {}: {}", c->id(), r.error());
    c->close();
    return;
  }
  if (stopping_) {
    c->close();
    return;
  }
  const uint32_t uid = c->peer().uid;
  if (admitted_ >= config_.bounds.max_connections) {
    refuse_connection(*c, fmt::format("{} connections open (bounds.max_connections)", admitted_));
    return;
  }
  std::size_t& mine = per_uid_[uid];
  if (mine >= config_.bounds.max_connections_per_uid) {
    refuse_connection(
        *c,
        fmt::format("uid {} has {} connections open (bounds.max_connections_per_uid)", uid, mine));
    return;
  }
  ++mine;
  ++admitted_;
  c->admitted = true;
  c->peer().is_operator = is_operator(c->credentials(), operator_gid_);
  log_debug("connection {}: pid {} uid {} gid {}{}", c->id(), c->peer().pid, uid, c->peer().gid,
            c->peer().is_operator ? " (operator)" : "");
  c->start();
}

void Manager::refuse_connection(Connection& c, std::string_view why) {
  if (per_uid_.contains(c.peer().uid) && per_uid_[c.peer().uid] == 0) per_uid_.erase(c.peer().uid);
  const int64_t now = monotonic_usec();
  if (now - last_refusal_log_usec_ >= kRefusalLogIntervalUsec) {
    if (refusals_unlogged_ > 0)
      log_warning(
          "connection from pid {} uid {} refused: {} ({} more refused since the last message)",
          c.peer().pid, c.peer().uid, why, refusals_unlogged_);
    else
      log_warning("connection from pid {} uid {} refused: {}", c.peer().pid, c.peer().uid, why);
    last_refusal_log_usec_ = now;
    refusals_unlogged_ = 0;
  } else {
    ++refusals_unlogged_;
  }
  c.close();
}

ipc::Service::Outcome Manager::dispatch(Connection& c, std::string_view message, std::string& out) {
  current_connection_ = &c;
  call_durable_ = false;
  const std::size_t before = out.size();
  auto outcome = service_.handle(message, engine_, c.peer(), *this, out);
  current_connection_ = nullptr;
  // In "ack", any call that changed durable state (an allocation, a limit, a ledger
  // record) is answered once that change is on disk, not only usage reports.
  // Also while the store fails: such a reply waits for the retry to succeed (or its
  // connection is closed at the next failure), never acknowledged before it is on disk.
  if (store_ && (engine_.has_changes() || !pending_write_.ledger.empty()) &&
      (config_.store.durability == StoreConfig::Durability::ack || undurable_records_ > kMaxUndurableRecords))
    call_durable_ = true;
  if (call_durable_) {
    call_durable_ = false;
    // The change goes to the store with everything else this loop iteration changed (one
    // submit per iteration, however many calls); the reply waits for that submission.
    epoch_needed_ = true;
    if (out.size() > before && !c.closing()) {  // a oneway call has no reply to hold
      // held_ lists a connection once: from its first hold until on_commit drains it.
      if (c.held_bytes() == 0 && std::find(held_.begin(), held_.end(), &c) == held_.end()) held_.push_back(&c);
      c.hold_output_until(next_epoch_);
    }
  }
  return outcome;
}

void Manager::after_batch(Connection&) { tick(); }

void Manager::closed(Connection& c) {
  if (c.admitted) {
    --admitted_;
    auto it = per_uid_.find(c.peer().uid);
    if (it != per_uid_.end() && --it->second == 0) per_uid_.erase(it);
  }
  if (c.watch) std::erase(watchers_, &c);
  std::erase(held_, &c);
  connections_.erase(&c);  // frees c
}

// ---- Events ---------------------------------------------------------------------------

void Manager::tick() {
  if (stopping_) return;
  engine_.advance();
  drain_events();
  timer_.arm(engine_.next_deadline());
}

void Manager::drain_events() {
  if (engine_.pending_events().empty()) return;
  std::vector<Event> events = engine_.take_events();
  for (const Event& e : events) {
    log_event(e);
    if (e.kind == EventKind::released && !e.process.empty()) {
      process_watch_.untrack(e.process);
      if (store_ && parse_pid(e.process)) pending_write_.removed_start_times.push_back(e.process);
    }
    if (e.action != Action::none && !e.process.empty()) carry_out(e);
    if (store_) ledger_outcome(e);
    if (!watchers_.empty()) publish(e);
  }
  for (Connection* w : watchers_) w->flush();
}

// Outcomes nobody called for (a hold that expired, a pending request nobody decided) are
// ledger records too, so the ledger tells what happened to every reservation and request.
void Manager::ledger_outcome(const Event& e) {
  const bool expired_request = e.kind == EventKind::pending_decided && e.outcome == "expired";
  if (e.kind != EventKind::reservation_expired && !expired_request) return;
  LedgerRecord rec;
  rec.kind = expired_request ? LedgerKind::consumption : LedgerKind::reservation;
  rec.recorded_at = e.at;
  rec.process = e.process;
  rec.thread = e.thread;
  rec.scope = e.path;
  rec.action = "expired";
  rec.detail = fmt::format("{}={}", expired_request ? "request_id" : "reservation_id", e.ref);
  append(std::move(rec));
}

void Manager::carry_out(const Event& e) {
  if (!parse_pid(e.process)) {
    log_info("process {}: action {} not carried out: a logical id has no OS process to signal",
             e.process, action_name(e.action));
    return;
  }
  Result<void> r;
  if (e.action == Action::terminate)
    r = enforcer_.terminate(e.process, e.grace_seconds);
  else if (e.action == Action::pause)
    r = enforcer_.pause(e.process);
  if (!r)
    log_warning("process {}: action {} failed: {}", e.process, action_name(e.action),
                r.error().message());
}

bool Manager::matches(const ipc::WatchFilter& f, const Event& e) {
  if (f.everything) return true;
  if (e.process.empty()) return false;
  if (std::find(f.processes.begin(), f.processes.end(), e.process) != f.processes.end())
    return true;
  if (e.owner && *e.owner == f.peer_uid) return true;
  if (f.peer_pid > 0)
    if (auto pid = parse_pid(e.process)) return daemon::is_descendant(*pid, f.peer_pid);
  return false;
}

void Manager::publish(const Event& e) {
  std::string frame;
  for (Connection* w : watchers_) {
    if (w->closing() || !w->watch || !matches(*w->watch, e)) continue;
    if (frame.empty()) {
      ipc::Reply reply(frame, false);
      ipc::write_event(reply.stream(), e);
      reply.finish();
    }
    if (!w->push(frame)) {
      log_warning("connection {} (pid {}): Watch events not read ({} bytes pending); closing it",
                  w->id(), w->peer().pid, w->pending_reply_bytes());
      w->close();
    }
  }
}

// ---- Processes ------------------------------------------------------------------------

Result<void> Manager::track(std::string_view process) {
  auto r = process_watch_.track(process);
  if (r && store_)
    if (auto pid = parse_pid(process))
      if (auto identity = process_identity(*pid))
        pending_write_.start_times.emplace_back(std::string(process), *identity);
  return r;
}

void Manager::on_process_exit(const std::string& id) {
  if (stopping_) return;
  log_debug("process {} exited", id);
  engine_.release(id);  // emits `released` with the final usage
  tick();
}

Result<void> Manager::pause(std::string_view process, bool resume) {
  return resume ? enforcer_.resume(process) : enforcer_.pause(process);
}

bool Manager::is_descendant(int32_t pid, int32_t ancestor) {
  return daemon::is_descendant(pid, ancestor);
}

// ---- Watch and stats ------------------------------------------------------------------

void Manager::watch(const ipc::WatchFilter& filter) {
  Connection* c = current_connection_;
  if (!c || c->closing()) return;
  if (!c->watch) {
    if (watchers_.size() >= config_.bounds.max_watchers) {
      log_warning(
          "connection {} (pid {}): Watch refused, {} watchers (bounds.max_watchers); closing it",
          c->id(), c->peer().pid, watchers_.size());
      c->close_after_batch();
      return;
    }
    watchers_.push_back(c);
  }
  c->watch = filter;
}

void Manager::write_stats(ipc::JsonWriter& w) {
  std::size_t paused = 0;
  for (const auto& [p, c] : connections_) paused += c->paused() ? 1 : 0;
  w.field("connections", static_cast<uint64_t>(admitted_));
  w.field("paused_connections", static_cast<uint64_t>(paused));
  w.field("calls_total", service_.calls());
  w.field("calls_per_second", calls_per_second_);
  w.field("uptime_seconds", static_cast<uint64_t>(clock_.uptime_seconds()));
  w.field("watchers", static_cast<uint64_t>(watchers_.size()));
  w.field("tracked_processes", static_cast<uint64_t>(engine_.process_count()));
  w.field("watched_pids", static_cast<uint64_t>(process_watch_.size()));
  if (store_) {
    StoreStats st = store_->stats();
    w.key("store").begin_object();
    w.field("durability", durability_name(config_.store.durability));
    w.field("path", store_->path());
    w.field("durable_seq", store_->durable_seq());
    w.field("transactions", st.transactions);
    w.field("failed_batches", st.failed_batches);
    w.field("ledger_records_written", st.ledger_records_written);
    w.field("failing", store_failed_);
    w.field("remembered_replies", static_cast<uint64_t>(replies_.size()));
    w.end_object();
  }
}

std::string Manager::status_text() {
  const int64_t now = monotonic_usec();
  const uint64_t calls = service_.calls();
  if (now > sample_usec_) {
    calls_per_second_ =
        static_cast<double>(calls - sample_calls_) * 1e6 / static_cast<double>(now - sample_usec_);
    sample_calls_ = calls;
    sample_usec_ = now;
  }
  return fmt::format("{} processes tracked, {:.0f} calls/s", engine_.process_count(),
                     calls_per_second_);
}

}  // namespace budgetd::daemon

namespace budgetd::daemon {

// ---- The store --------------------------------------------------------------------------

namespace {
Durability store_durability(StoreConfig::Durability d) {
  switch (d) {
    case StoreConfig::Durability::ack: return Durability::ack;
    case StoreConfig::Durability::batch: return Durability::batch;
    case StoreConfig::Durability::none: return Durability::none;
  }
  return Durability::ack;
}
// While the store fails, the queued writes are retried this often.
constexpr uint64_t kStoreRetryMs = 500;
}  // namespace

std::expected<void, std::string> Manager::open_store() {
  StoreOptions so;
  so.dir = effective_state_dir(config_, options_);
  so.durability = store_durability(config_.store.durability);
  so.batch_window = std::chrono::milliseconds(config_.store.batch_window_ms);
  so.retention_days = config_.store.retention_days;
  so.loop = &loop_.loop;
  const int64_t t0 = monotonic_usec();
  auto opened = Store::open(so);
  if (!opened) return std::unexpected("cannot open the state store: " + opened.error().message());
  const int64_t t1 = monotonic_usec();
  auto loaded = (*opened)->load();
  if (!loaded) return std::unexpected("cannot load the state store: " + loaded.error().message());
  const int64_t t2 = monotonic_usec();
  // All or nothing: on an error the engine is as the configuration made it, and we stop.
  if (auto r = engine_.import_state(loaded->state); !r)
    return std::unexpected(fmt::format("the state in {} cannot be restored: {}", (*opened)->path(),
                                       r.error().message()));
  store_ = std::move(*opened);
  if (config_.store.max_size_mb > 0) store_->set_page_limit(page_limit(config_.store));
  store_->set_commit_callback([this](uint64_t seq, const StoreError* e) { on_commit(seq, e); });
  // The file's templates and rate limits win over stored copies of them (the operator
  // edited the file while budgetd was down); limits set live on scopes stay as stored.
  for (const auto& t : config_.templates) (void)engine_.set_template(t);
  RateLimiter& rl = engine_.rate_limiter();
  for (const auto& [user, c] : config_.rate_limits.users) (void)rl.set_user_limits(user, c);
  for (const auto& [endpoint, c] : config_.rate_limits.endpoints) (void)rl.set_endpoint_limits(endpoint, c);

  const TimePoint horizon = engine_.now() - std::chrono::hours(config_.store.idempotency_retention_hours);
  for (auto& e : loaded->idempotency) {
    if (e.recorded_at < horizon) continue;
    std::string k = reply_key(e.method, e.uid, e.key);
    reply_order_.emplace_back(e.recorded_at, k);
    replies_[std::move(k)] = Remembered{std::move(e.reply), e.recorded_at};
  }
  std::sort(reply_order_.begin(), reply_order_.end());
  recover_processes(*loaded);

  uv_check_init(&loop_.loop, &submit_check_);
  submit_check_.data = this;
  uv_check_start(&submit_check_, [](uv_check_t* h) {
    auto* self = static_cast<Manager*>(h->data);
    if (self->store_ && !self->stopping_) self->submit_changes();
  });
  uv_timer_init(&loop_.loop, &store_retry_);
  store_retry_.data = this;
  store_handles_ = true;

  const int64_t t3 = monotonic_usec();
  log_info("state: {} ({} processes, {} scopes, {} threads, {} holds restored in {} ms: open {}, "
           "load {}, restore {}; durability {})",
           store_->path(), loaded->state.processes.size(), loaded->state.scopes.size(),
           loaded->state.threads.size(), loaded->state.holds.size(), (t3 - t0) / 1000, (t1 - t0) / 1000,
           (t2 - t1) / 1000, (t3 - t2) / 1000, durability_name(config_.store.durability));
  // Timeouts that passed and resets missed while budgetd was down apply now, with events.
  tick();
  submit_changes();
  return {};
}

void Manager::recover_processes(const LoadedState& loaded) {
  std::unordered_map<std::string_view, uint64_t> identities;
  for (const auto& [id, identity] : loaded.start_times) identities.emplace(id, identity);
  for (const auto& p : loaded.state.processes) {
    auto pid = parse_pid(p.id);
    if (!pid) continue;  // a logical id has no OS process to check
    auto stored = identities.find(p.id);
    auto now = process_identity(*pid);
    std::string why;
    if (!now)
      why = "the process is gone";
    else if (stored == identities.end() || stored->second != *now)
      why = "the pid now belongs to another process";
    else if (auto r = process_watch_.track(p.id); !r)
      why = "it cannot be watched: " + r.error().message();
    if (why.empty()) continue;
    log_info("process {}: released at recovery: {}", p.id, why);
    LedgerRecord rec;
    rec.kind = LedgerKind::audit;
    rec.process = p.id;
    rec.scope = p.scope;
    rec.action = "release";
    rec.detail = "recovery: " + why;
    append(std::move(rec));
    engine_.release(p.id);  // its `released` event carries the final usage
    pending_write_.removed_start_times.push_back(p.id);
  }
}

void Manager::submit_changes() {
  StoreWrite w = std::move(pending_write_);
  pending_write_ = StoreWrite{};
  w.changes = engine_.take_changes();
  // Memory only: the engine's state is not kept, only the ledger (for Usage reports).
  if (config_.store.durability == StoreConfig::Durability::none) {
    w.changes = EngineChanges{};
    w.start_times.clear();
    w.removed_start_times.clear();
    w.idempotency.clear();
  }
  // A held reply needs a submission even when its call changed nothing (a replayed
  // retry): it then waits for the batch that makes the first answer durable, if not yet.
  if (w.empty() && !epoch_needed_) return;
  epoch_needed_ = false;
  const std::size_t records = w.ledger.size();
  undurable_records_ += records;
  epochs_.push_back(Submitted{next_epoch_++, store_->submit(std::move(w)), records});
}

void Manager::on_commit(uint64_t seq, const StoreError* error) {
  (void)seq;
  if (error) {
    if (!store_failed_)
      log_error("state: a batch could not be written ({}): {}; durable calls fail with "
                "io.budgetd.StorageFailed until it can",
                store_errc_name(error->code), error->message);
    store_failed_ = true;
    store_error_ = error->message;
    // Their replies were never acknowledged: the clients see the connection end and retry
    // (with their idempotency keys) once the store works again.
    for (Connection* c : std::vector<Connection*>(held_)) c->close();
    held_.clear();
    if (store_handles_)
      uv_timer_start(&store_retry_, [](uv_timer_t* t) {
        auto* self = static_cast<Manager*>(t->data);
        if (self->store_ && self->store_failed_) self->store_->submit(StoreWrite{});
      }, kStoreRetryMs, kStoreRetryMs);
    return;
  }
  if (store_failed_) {
    store_failed_ = false;
    store_error_.clear();
    log_info("state: writes succeed again");
    if (store_handles_) uv_timer_stop(&store_retry_);
  }
  // Replies wait for submissions (epochs); a submission is durable once its batch is.
  const uint64_t durable = store_->durable_seq();
  while (!epochs_.empty() && epochs_.front().seq <= durable) {
    durable_epoch_ = epochs_.front().epoch;
    undurable_records_ -= epochs_.front().records;
    epochs_.pop_front();
  }
  std::erase_if(held_, [this](Connection* c) {
    c->release_output(durable_epoch_);
    return c->held_bytes() == 0;
  });
}

Result<void> Manager::need_durable() {
  if (!store_) return {};
  if (store_failed_) return fail(Errc::invalid_state, "the state store cannot take writes: " + store_error_);
  if (config_.store.durability == StoreConfig::Durability::ack) call_durable_ = true;
  return {};
}

void Manager::append(LedgerRecord record) {
  if (!store_) return;
  if (record.id.empty()) {
    std::array<uint8_t, 16> bytes;
    for (std::size_t i = 0; i < bytes.size(); i += 8) {
      uint64_t r = guid_rng_();
      std::memcpy(bytes.data() + i, &r, 8);
    }
    record.id = format_guid(bytes);
  }
  if (record.recorded_at == TimePoint{}) record.recorded_at = engine_.now();
  pending_write_.ledger.push_back(std::move(record));
}

std::string Manager::reply_key(std::string_view method, uint32_t uid, std::string_view key) {
  return fmt::format("{}\n{}\n{}", method, uid, key);
}

std::optional<std::string> Manager::idempotent_reply(std::string_view method, uint32_t uid,
                                                     std::string_view key) {
  auto it = replies_.find(reply_key(method, uid, key));
  if (it == replies_.end()) return std::nullopt;
  const TimePoint horizon = engine_.now() - std::chrono::hours(config_.store.idempotency_retention_hours);
  if (it->second.at < horizon) return std::nullopt;
  return it->second.reply;
}

void Manager::remember_reply(std::string_view method, uint32_t uid, std::string_view key,
                             std::string_view reply) {
  if (!store_) return;
  const TimePoint now = engine_.now();
  std::string k = reply_key(method, uid, key);
  auto [it, fresh] = replies_.insert_or_assign(k, Remembered{std::string(reply), now});
  (void)it;
  (void)fresh;
  // Always a new order entry: one for a key answered again after its horizon replaces the
  // old entry, whose time no longer matches (forget_old_replies skips it).
  reply_order_.emplace_back(now, k);
  pending_write_.idempotency.push_back(IdempotencyEntry{std::string(method), uid, std::string(key),
                                                       std::string(reply), now});
  forget_old_replies();
}

void Manager::forget_old_replies() {
  const TimePoint horizon = engine_.now() - std::chrono::hours(config_.store.idempotency_retention_hours);
  while (!reply_order_.empty() &&
         (reply_order_.front().first < horizon || replies_.size() > kMaxRememberedReplies)) {
    auto it = replies_.find(reply_order_.front().second);
    if (it != replies_.end() && it->second.at == reply_order_.front().first) replies_.erase(it);
    reply_order_.pop_front();
  }
}

}  // namespace budgetd::daemon
