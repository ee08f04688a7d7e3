// libFuzzer target: arbitrary bytes from a client, through the Framer and Service::handle
// (every interface registered) on a real Engine, as one connection of the daemon would.
//
// Input layout: byte 0 chooses who calls and how reads split the stream; the rest is the
// byte stream of the connection.
//   bits 0-1: the peer: 0 an operator, 1 an agent (uid 1000, pid 500), 2 another agent
//             (uid 1001, pid 600), 3 the agent, with every pid its descendant
//   bits 2-7: read size: 0 = the whole stream in one feed, n = feeds of n bytes
//
// Besides the sanitizers, it checks what the service writes: every reply frame is one JSON
// object ending with a NUL, with "parameters" (and "error" a string when present), and a
// close happens only for a message that is not a call. Time moves on between messages so
// expiries, resets and timeouts fire, and every pending event is written as a Watch reply
// would be, which must be JSON too.
#include <simdjson.h>

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

#include "ipc/framer.h"
#include "ipc/json_writer.h"
#include "ipc/methods.h"
#include "ipc/service.h"
#include "lib/clock.h"
#include "lib/engine.h"

namespace {

using namespace budgetd;
using namespace budgetd::ipc;

// Deterministic stand-ins for what only the daemon can do.
class FuzzHooks final : public Hooks {
 public:
  bool all_descendants = false;
  Result<void> reload() override { return {}; }
  Result<void> pause(std::string_view process, bool) override {
    if (process.ends_with('7')) return fail(Errc::unknown_process, std::string(process));
    return {};
  }
  void watch(const WatchFilter&) override {}
  void write_stats(JsonWriter& w) override { w.field("connections", uint64_t{1}); }
  bool is_descendant(int32_t pid, int32_t ancestor) override {
    return all_descendants || pid == ancestor + 1;
  }
  // A pid ending in 9 cannot be opened (a process that already exited).
  Result<void> track(std::string_view process) override {
    if (process.ends_with('9')) return fail(Errc::unknown_process, std::string(process));
    return {};
  }
};

[[noreturn]] void die(const char* what, std::string_view bytes) {
  std::fprintf(stderr, "varlink_fuzz: %s: %.*s\n", what, static_cast<int>(bytes.size()),
               bytes.data());
  std::abort();
}

// Checks one reply (without its NUL): a JSON object with "parameters", and a string
// "error" if any.
void check_reply(simdjson::dom::parser& parser, std::string_view reply) {
  simdjson::padded_string copy(reply);
  simdjson::dom::element doc;
  if (parser.parse(copy).get(doc) != simdjson::SUCCESS) die("reply is not JSON", reply);
  simdjson::dom::object obj;
  if (doc.get_object().get(obj) != simdjson::SUCCESS) die("reply is not an object", reply);
  simdjson::dom::object params;
  if (obj["parameters"].get_object().get(params) != simdjson::SUCCESS)
    die("reply without parameters", reply);
  simdjson::dom::element e;
  if (obj["error"].get(e) == simdjson::SUCCESS && !e.is_string())
    die("error is not a string", reply);
}

// Every reply written since `from`: whole frames, each valid.
void check_output(simdjson::dom::parser& parser, std::string_view out) {
  if (out.empty()) return;
  if (out.back() != '\0') die("output does not end with a NUL", out);
  std::size_t pos = 0;
  while (pos < out.size()) {
    std::size_t nul = out.find('\0', pos);
    check_reply(parser, out.substr(pos, nul - pos));
    pos = nul + 1;
  }
}

Peer peer_of(uint8_t selector) {
  switch (selector & 3) {
    case 0:
      return Peer{0, 0, 1, true};
    case 2:
      return Peer{1001, 1001, 600, false};
    default:
      return Peer{1000, 1000, 500, false};
  }
}

// Was this message a varlink call? (A close is only allowed when it was not.)
bool is_call(simdjson::dom::parser& parser, std::string_view message) {
  simdjson::padded_string copy(message);
  simdjson::dom::element doc;
  if (parser.parse(copy).get(doc) != simdjson::SUCCESS) return false;
  std::string_view method;
  return doc["method"].get_string().get(method) == simdjson::SUCCESS;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const uint8_t control = data[0];
  const std::string_view stream(reinterpret_cast<const char*>(data) + 1, size - 1);
  const Peer peer = peer_of(control);
  const std::size_t read_size = (control >> 2) == 0 ? stream.size() : (control >> 2);

  // A fresh world per input, so every crash reproduces from its input alone.
  FakeClock clock(TimePoint{std::chrono::sys_days{std::chrono::year{2025} / 1 / 15}});
  EngineConfig config;
  config.max_processes = 64;  // small bounds, so the fuzzer reaches them
  config.max_threads = 64;
  config.max_holds = 64;
  Engine engine(clock, config);
  FuzzHooks hooks;
  hooks.all_descendants = (control & 3) == 3;
  ServiceInfo info;
  info.version = "fuzz";
  Service service(info);
  register_all(service);
  simdjson::dom::parser checker;

  Framer framer;
  std::string out;
  std::size_t fed = 0;
  bool closed = false;
  while (!closed && fed < stream.size()) {
    const std::size_t n = std::min(read_size, stream.size() - fed);
    (void)framer.feed(stream.data() + fed, n);
    fed += n;
    while (auto frame = framer.next()) {
      if (!*frame) {
        closed = true;  // a broken limit: the daemon closes the connection
        break;
      }
      const std::string_view message = **frame;
      const std::size_t before = out.size();
      const auto outcome = service.handle(message, engine, peer, hooks, out);
      check_output(checker, std::string_view(out).substr(before));
      if (outcome == Service::Outcome::close) {
        if (out.size() != before) die("a close wrote a reply", out.substr(before));
        if (is_call(checker, message)) die("a well-formed call closed the connection", message);
        closed = true;
        break;
      }
      // Time moves on a little after every call, by an amount the input decides.
      clock.advance(std::chrono::milliseconds(message.size() * 37 % 5000));
      engine.advance();
      for (const Event& e : engine.take_events()) {
        std::string body = "{\"continues\":true,\"parameters\":{";
        JsonWriter w(body);
        write_event(w, e);
        body += "}}";
        check_reply(checker, body);
      }
      if (out.size() > (std::size_t{1} << 20)) out.clear();  // keep memory flat on long inputs
    }
  }
  return 0;
}
