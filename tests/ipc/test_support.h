// Helpers shared by the ipc tests: a fake of the daemon's Hooks that records every call,
// and a Harness that drives the real Service (every interface registered) on a real Engine
// with a FakeClock, speaking varlink bytes in and parsing the reply bytes back out.
#pragma once

#include <gtest/gtest.h>

#include <chrono>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "ipc/framer.h"
#include "ipc/json_writer.h"
#include "ipc/methods.h"
#include "ipc/service.h"
#include "lib/clock.h"
#include "lib/engine.h"

namespace budgetd::ipc::testsupport {

using json = nlohmann::json;

// An operator (uid 0) and an ordinary agent runtime (uid 1000, pid 500).
inline constexpr Peer kOperator{0, 0, 1, true};
inline constexpr Peer kAgent{1000, 1000, 500, false};

// Implements every Hooks method; records what ipc/ asked of the daemon. is_descendant and
// track answer what the test configured.
class FakeHooks : public Hooks {
 public:
  // --- configuration ---
  Result<void> reload_result{};
  Result<void> pause_result{};
  // is_descendant(pid, ancestor) is true for these pairs, or for every pair when
  // all_descendants is set.
  std::set<std::pair<int32_t, int32_t>> descendants;
  bool all_descendants = false;
  // What track() answers (an error refuses the allocation).
  Result<void> track_result{};
  // The fields write_stats adds to Admin.Stats.
  std::vector<std::pair<std::string, uint64_t>> stats_fields = {{"connections", 1}};

  // --- what was asked ---
  int reloads = 0;
  std::vector<std::pair<std::string, bool>> pauses;  // (process, resume)
  std::vector<WatchFilter> watches;
  int stats_written = 0;
  std::vector<std::pair<int32_t, int32_t>> descendant_queries;  // (pid, ancestor)
  std::vector<std::string> tracked;

  Result<void> reload() override {
    ++reloads;
    return reload_result;
  }
  Result<void> pause(std::string_view process, bool resume) override {
    pauses.emplace_back(std::string(process), resume);
    return pause_result;
  }
  void watch(const WatchFilter& filter) override { watches.push_back(filter); }
  void write_stats(JsonWriter& w) override {
    ++stats_written;
    for (const auto& [key, value] : stats_fields) w.field(key, value);
  }
  bool is_descendant(int32_t pid, int32_t ancestor) override {
    descendant_queries.emplace_back(pid, ancestor);
    return all_descendants || descendants.contains({pid, ancestor});
  }
  Result<void> track(std::string_view process) override {
    tracked.emplace_back(process);
    return track_result;
  }
};

// Splits varlink output into its frames (each ends with a NUL) and parses each as JSON.
// Output that does not end with a NUL, or a frame that is not JSON, fails the test.
inline std::vector<json> parse_frames(std::string_view out) {
  std::vector<json> replies;
  std::size_t pos = 0;
  while (pos < out.size()) {
    std::size_t nul = out.find('\0', pos);
    if (nul == std::string_view::npos) {
      ADD_FAILURE() << "reply bytes without a terminating NUL: " << out.substr(pos);
      break;
    }
    std::string_view frame = out.substr(pos, nul - pos);
    json j = json::parse(frame, nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded()) ADD_FAILURE() << "reply is not JSON: " << frame;
    replies.push_back(std::move(j));
    pos = nul + 1;
  }
  return replies;
}

class Harness {
 public:
  // 2025-01-15 12:00:00 UTC: far from the Unix epoch, mid-day, so no calendar edge.
  static constexpr TimePoint kStart =
      TimePoint{std::chrono::sys_days{std::chrono::year{2025} / 1 / 15}} + std::chrono::hours(12);

  explicit Harness(EngineConfig config = {})
      : clock(kStart), engine(clock, std::move(config)), service(info()) {
    register_all(service);
  }
  Harness(const Harness&) = delete;
  Harness& operator=(const Harness&) = delete;

  FakeClock clock;
  Engine engine;
  FakeHooks hooks;
  Service service;
  // The raw bytes and the outcome of the last call()/call_stream().
  std::string out;
  Service::Outcome outcome = Service::Outcome::replied;

  // Frames one message (the JSON, a NUL, then Framer::kPadding more bytes), runs
  // Service::handle on a view of the JSON only, and returns the parsed replies.
  std::vector<json> call(std::string message, const Peer& peer = kOperator) {
    const std::size_t size = message.size();
    message.push_back('\0');
    message.append(Framer::kPadding, '\0');
    out.clear();
    outcome = service.handle(std::string_view(message.data(), size), engine, peer, hooks, out);
    return parse_frames(out);
  }

  // Feeds a whole byte stream (several NUL-terminated messages) through a Framer and handles
  // every message in order, as a connection would; stops at the first close.
  std::vector<json> call_stream(std::string_view bytes, const Peer& peer = kOperator) {
    Framer framer;
    out.clear();
    outcome = Service::Outcome::replied;
    (void)framer.feed(bytes.data(), bytes.size());
    while (auto frame = framer.next()) {
      if (!*frame) {
        outcome = Service::Outcome::close;
        break;
      }
      outcome = service.handle(**frame, engine, peer, hooks, out);
      if (outcome == Service::Outcome::close) break;
    }
    return parse_frames(out);
  }

  // Calls `method` (full name) with `params` and expects exactly one reply, which it returns
  // (null when there was not exactly one).
  json invoke(std::string_view method, const json& params = json::object(),
              const Peer& peer = kOperator) {
    json msg = {{"method", method}, {"parameters", params}};
    auto replies = call(msg.dump(), peer);
    if (replies.size() != 1) {
      ADD_FAILURE() << method << ": expected one reply, got " << replies.size() << ": " << out;
      return json();
    }
    return replies.front();
  }

  // io.budgetd.Agent.<method>.
  json agent(std::string_view method, const json& params = json::object(),
             const Peer& peer = kOperator) {
    return invoke("io.budgetd.Agent." + std::string(method), params, peer);
  }

 private:
  static ServiceInfo info() {
    ServiceInfo i;
    i.version = "0.1.0-test";
    return i;
  }
};

// The error name of a reply, or "" for a success.
inline std::string error_of(const json& reply) {
  return reply.is_object() && reply.contains("error") && reply["error"].is_string()
             ? reply["error"].get<std::string>()
             : std::string();
}

// The parameters of a reply ({} when absent).
inline json params_of(const json& reply) {
  return reply.is_object() && reply.contains("parameters") ? reply["parameters"] : json::object();
}

}  // namespace budgetd::ipc::testsupport
