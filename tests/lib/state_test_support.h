// Helpers for the durable-state tests: comparing two EngineStates with a readable first
// difference, and a "mirror" that applies take_changes() the way the store does.
#pragma once

#include <algorithm>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "lib/engine.h"
#include "lib/state.h"

namespace budgetd::testing_support {

inline std::string key_of(const TemplateRecord& r) { return std::to_string(r.kind) + ":" + r.name; }
inline std::string key_of(const ScopeRecord& r) { return r.path; }
inline std::string key_of(const ProcessRecord& r) { return r.id; }
inline std::string key_of(const ThreadRecord& r) { return r.id; }
inline std::string key_of(const HoldRecord& r) { return std::to_string(r.id); }
inline std::string key_of(const RateLimitRecord& r) { return (r.endpoint ? "endpoint:" : "user:") + r.name; }
inline std::string key_of(const RateWindowRecord& r) { return r.user + "/" + r.endpoint; }

// "" when equal, else the first list that differs and the key where it does.
template <class T>
std::string diff_list(const char* what, const std::vector<T>& a, const std::vector<T>& b) {
  for (std::size_t i = 0; i < std::max(a.size(), b.size()); ++i) {
    if (i >= a.size()) return std::string(what) + ": only the second has " + key_of(b[i]);
    if (i >= b.size()) return std::string(what) + ": only the first has " + key_of(a[i]);
    if (!(a[i] == b[i]))
      return std::string(what) + ": " + key_of(a[i]) + " differs" +
             (key_of(a[i]) != key_of(b[i]) ? " from " + key_of(b[i]) : std::string());
  }
  return {};
}

inline std::string diff_state(const EngineState& a, const EngineState& b) {
  for (const std::string& d :
       {diff_list("templates", a.templates, b.templates), diff_list("scopes", a.scopes, b.scopes),
        diff_list("processes", a.processes, b.processes), diff_list("threads", a.threads, b.threads),
        diff_list("holds", a.holds, b.holds), diff_list("rate_limits", a.rate_limits, b.rate_limits),
        diff_list("rate_windows", a.rate_windows, b.rate_windows)})
    if (!d.empty()) return d;
  if (!(a.counters == b.counters)) {
    std::ostringstream os;
    os << "counters: next_hold_id " << a.counters.next_hold_id << "/" << b.counters.next_hold_id << " total "
       << a.counters.total_events << "/" << b.counters.total_events << " consumed " << a.counters.consumed_count
       << "/" << b.counters.consumed_count << " rejected " << a.counters.rejected_count << "/"
       << b.counters.rejected_count << " partial " << a.counters.partial << "/" << b.counters.partial
       << " thread default " << a.counters.thread_default_max_tokens << "/"
       << b.counters.thread_default_max_tokens;
    return os.str();
  }
  return {};
}

// What the store holds: an EngineState kept up to date from take_changes() alone, upserting
// and deleting by key. Equal to export_state() unless a mutation forgot to mark its entity.
class Mirror {
 public:
  Mirror() = default;
  explicit Mirror(EngineState s) : s_(std::move(s)) {}

  void apply(const EngineChanges& c) {
    for (const auto& r : c.templates) upsert(s_.templates, r);
    for (const auto& r : c.scopes) upsert(s_.scopes, r);
    for (const auto& r : c.processes) upsert(s_.processes, r);
    for (const auto& id : c.released_processes) erase(s_.processes, id);
    for (const auto& r : c.threads) upsert(s_.threads, r);
    for (const auto& id : c.removed_threads) erase(s_.threads, id);
    for (const auto& r : c.holds) upsert(s_.holds, r);
    for (uint64_t id : c.removed_holds) erase(s_.holds, std::to_string(id));
    for (const auto& r : c.rate_limits) upsert(s_.rate_limits, r);
    for (const auto& r : c.removed_rate_limits) erase(s_.rate_limits, key_of(r));
    for (const auto& r : c.rate_windows) upsert(s_.rate_windows, r);
    for (const auto& [user, endpoint] : c.removed_rate_windows) erase(s_.rate_windows, user + "/" + endpoint);
    if (c.counters) s_.counters = *c.counters;
  }

  // Sorted as export_state() sorts.
  EngineState state() const {
    EngineState s = s_;
    auto by = [](auto& v, auto key) {
      std::sort(v.begin(), v.end(), [&](const auto& a, const auto& b) { return key(a) < key(b); });
    };
    by(s.templates, [](const TemplateRecord& r) { return std::pair(r.kind, r.name); });
    by(s.scopes, [](const ScopeRecord& r) { return r.path; });
    by(s.processes, [](const ProcessRecord& r) { return r.id; });
    by(s.threads, [](const ThreadRecord& r) { return r.id; });
    by(s.holds, [](const HoldRecord& r) { return r.id; });
    by(s.rate_limits, [](const RateLimitRecord& r) { return std::pair(r.endpoint, r.name); });
    by(s.rate_windows, [](const RateWindowRecord& r) { return std::pair(r.user, r.endpoint); });
    return s;
  }

  // A key in at most one list of one batch: the checks below catch a batch that both
  // upserts and deletes one.
  static std::string duplicate_key(const EngineChanges& c) {
    auto dup = [](std::vector<std::string> keys) -> std::string {
      std::sort(keys.begin(), keys.end());
      auto it = std::adjacent_find(keys.begin(), keys.end());
      return it == keys.end() ? std::string() : *it;
    };
    std::vector<std::string> k;
    for (const auto& r : c.processes) k.push_back(r.id);
    for (const auto& id : c.released_processes) k.push_back(id);
    if (auto d = dup(k); !d.empty()) return "process " + d;
    k.clear();
    for (const auto& r : c.threads) k.push_back(r.id);
    for (const auto& id : c.removed_threads) k.push_back(id);
    if (auto d = dup(k); !d.empty()) return "thread " + d;
    k.clear();
    for (const auto& r : c.holds) k.push_back(std::to_string(r.id));
    for (uint64_t id : c.removed_holds) k.push_back(std::to_string(id));
    if (auto d = dup(k); !d.empty()) return "hold " + d;
    k.clear();
    for (const auto& r : c.scopes) k.push_back(r.path);
    if (auto d = dup(k); !d.empty()) return "scope " + d;
    k.clear();
    for (const auto& r : c.rate_limits) k.push_back(key_of(r));
    for (const auto& r : c.removed_rate_limits) k.push_back(key_of(r));
    if (auto d = dup(k); !d.empty()) return "rate limit " + d;
    k.clear();
    for (const auto& r : c.rate_windows) k.push_back(key_of(r));
    for (const auto& [u, e] : c.removed_rate_windows) k.push_back(u + "/" + e);
    if (auto d = dup(k); !d.empty()) return "rate window " + d;
    return {};
  }

 private:
  template <class T>
  static void upsert(std::vector<T>& v, const T& r) {
    for (auto& x : v)
      if (key_of(x) == key_of(r)) {
        x = r;
        return;
      }
    v.push_back(r);
  }
  template <class T>
  static void erase(std::vector<T>& v, const std::string& key) {
    std::erase_if(v, [&](const T& x) { return key_of(x) == key; });
  }

  EngineState s_;
};

}  // namespace budgetd::testing_support
