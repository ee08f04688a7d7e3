// The varlink service: one framed message in, its reply frames out. Owns the method table
// and serves org.varlink.service (GetInfo, GetInterfaceDescription) from the interface
// files compiled into the binary, so the description a client reads is the one the
// methods implement.
#pragma once

#include <simdjson.h>

#include <functional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "ipc/codec.h"
#include "ipc/json_writer.h"
#include "lib/engine.h"
#include "lib/ledger.h"
#include "lib/pricing.h"

namespace budgetd::ipc {

// Who is calling, from SO_PEERCRED; never from a message field.
struct Peer {
  uint32_t uid = 0;
  uint32_t gid = 0;
  int32_t pid = 0;
  bool is_operator = false;  // uid 0 or a member of the configured operator group
};

// What a Watch call subscribes to.
struct WatchFilter {
  bool everything = false;  // Admin.Watch
  std::vector<std::string> processes;  // Agent.Watch: events of these processes
  int32_t peer_pid = 0;     // Agent.Watch: also the caller's descendants
  uint32_t peer_uid = 0;    // and logical ids it owns
};

// What only the daemon can do. ipc/ calls it; tests pass a fake.
class Hooks {
 public:
  virtual ~Hooks() = default;
  virtual Result<void> reload() = 0;
  // Pause (SIGSTOP) / resume (SIGCONT) an OS-pid process through its pidfd.
  virtual Result<void> pause(std::string_view process, bool resume) = 0;
  // Subscribes the calling connection to events; replies are streamed with continues.
  virtual void watch(const WatchFilter& filter) = 0;
  // The daemon's part of Admin.Stats (connections, calls, uptime, ...).
  virtual void write_stats(JsonWriter& w) = 0;
  // Is `pid` `ancestor` or below it in the process tree (/proc parent chain)?
  virtual bool is_descendant(int32_t pid, int32_t ancestor) = 0;
  // A new OS-pid process was allocated: watch it (pidfd). An error refuses the allocation.
  virtual Result<void> track(std::string_view process) = 0;

  // ---- The ledger and durability (the store). Defaults: no store (tests, durability none
  // without a ledger). -----------------------------------------------------------------
  // Appends a ledger record (its id and recorded_at are filled here when empty).
  virtual void append(LedgerRecord record) { (void)record; }
  // The reply first given to a call with this idempotency key (scoped by method and the
  // caller's uid), while it is retained; the handler then answers it unchanged.
  virtual std::optional<std::string> idempotent_reply(std::string_view method, uint32_t uid,
                                                      std::string_view key) {
    (void)method, (void)uid, (void)key;
    return std::nullopt;
  }
  // Remembers `reply` (a whole reply frame's JSON, without the NUL) for the key.
  virtual void remember_reply(std::string_view method, uint32_t uid, std::string_view key,
                              std::string_view reply) {
    (void)method, (void)uid, (void)key, (void)reply;
  }
  // The current call changed durable state: in durability "ack" its reply (and every later
  // reply on the connection) waits until the batch holding the change is on disk. An error
  // means the store cannot take writes (io.budgetd.StorageFailed); nothing is answered yet.
  virtual Result<void> need_durable() { return {}; }
  // Unit prices (config, seed 004 / seed 001 defaults).
  virtual const PriceTable& prices() {
    static const PriceTable defaults = PriceTable::defaults();
    return defaults;
  }
  // The ledger's read side; nullptr when there is no store.
  virtual LedgerReader* ledger() { return nullptr; }
};

class Reply {
 public:
  Reply(std::string& out, bool oneway) : out_(oneway ? scratch_ : out), start_(out_.size()), w_(out_) {}
  JsonWriter& ok();
  JsonWriter& stream();  // a reply with "continues": true
  JsonWriter& error(std::string_view name);
  void invalid_parameter(std::string_view name);
  void fail(const Error& e);
  void refuse(const Refusal& r);
  // Closes the reply; an untouched reply becomes {"parameters":{}}.
  void finish();
  // Answers with a frame given before (an idempotent retry): `frame` is the whole reply
  // JSON without its NUL, written unchanged.
  void replay(std::string_view frame);
  bool is_error() const { return is_error_; }
  // The finished frame without its NUL (also for a oneway call, whose bytes are not sent).
  std::string_view frame() const;

 private:
  void begin(std::string_view head);
  std::string scratch_;
  std::string& out_;
  std::size_t start_;  // where this reply's frame begins in out_
  JsonWriter w_;
  bool started_ = false;
  bool finished_ = false;
  bool is_error_ = false;
};

struct CallContext {
  Engine& engine;
  const Peer& peer;
  Hooks& hooks;
  const Call& call;
  Params& params;
  Reply& reply;
  // Set by a handler whose call carried a new idempotency key: once the reply is final and
  // not an error, the Service hands it to Hooks::remember_reply under this key.
  std::string_view remember_key = {};
};

using Handler = void (*)(CallContext&);

struct ServiceInfo {
  std::string vendor = "budgetd";
  std::string product = "budgetd";
  std::string version;
  std::string url = "https://github.com/budgetd/budgetd";
};

class Service {
 public:
  explicit Service(ServiceInfo info);

  // `description` is the interface file's text; its name is read from it.
  void add_interface(std::string_view description);
  void add_method(std::string_view full_name, Handler h);

  enum class Outcome { replied, close };
  // Handles one framed message (followed by Framer::kPadding readable bytes) and appends
  // the reply frame to `out` (nothing for oneway). `close` means the message was not a
  // varlink call at all; the connection is to be dropped.
  Outcome handle(std::string_view message, Engine& engine, const Peer& peer, Hooks& hooks, std::string& out);

  const std::vector<std::string>& interfaces() const { return interface_names_; }
  std::string_view description(std::string_view interface) const;
  uint64_t calls() const { return calls_; }

 private:
  struct Hash {
    using is_transparent = void;
    std::size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
  };
  ServiceInfo info_;
  simdjson::dom::parser parser_;  // reused: its buffers amortize over every call
  std::unordered_map<std::string, Handler, Hash, std::equal_to<>> methods_;
  std::unordered_map<std::string, std::string, Hash, std::equal_to<>> descriptions_;
  std::vector<std::string> interface_names_;
  uint64_t calls_ = 0;
};

// The text of org.varlink.service, which every varlink service implements.
extern const std::string_view kVarlinkServiceInterface;

}  // namespace budgetd::ipc
