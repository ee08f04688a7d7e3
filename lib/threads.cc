// Thread budgets: seed 003's ThreadBudgetRegistry, every method, on the budget tree. A
// thread may belong to a process, so its tokens charge the process and its whole path.
#include <algorithm>

#include "lib/engine.h"

namespace budgetd {

Engine::Thread* Engine::find_thread(std::string_view id) {
  auto it = threads_.find(std::string(id));
  return it == threads_.end() ? nullptr : &it->second;
}

const Engine::Thread* Engine::find_thread(std::string_view id) const {
  auto it = threads_.find(std::string(id));
  return it == threads_.end() ? nullptr : &it->second;
}

Result<Engine::Thread*> Engine::ensure_thread(std::string_view id, std::string_view process) {
  if (auto v = validate_id(id); !v) return std::unexpected(v.error());
  const Process* p = nullptr;
  if (!process.empty()) {
    p = find_process(process);
    if (!p) return fail(Errc::unknown_process, std::string(process));
  }
  if (Thread* t = find_thread(id)) {
    // A thread first seen without a process may be claimed by one later; never moved
    // between processes, which would split its usage across two budgets.
    if (p && t->process.empty()) {
      t->process = p->id;
      t->scope = p->scope;
      mark_thread(id, *t);
    } else if (p && t->process != p->id) {
      return fail(Errc::invalid_argument, "thread " + std::string(id) + " belongs to process " + t->process);
    }
    return t;
  }
  if (threads_.size() >= config_.max_threads) return fail(Errc::capacity_exceeded, "thread budgets at the maximum");
  Thread t;
  t.max_tokens = thread_default_;
  t.process = p ? p->id : std::string();
  t.scope = p ? p->scope : root_;
  Thread& made = threads_.emplace(std::string(id), std::move(t)).first->second;
  mark_thread(id, made);
  return &made;
}

ThreadUsage Engine::thread_view(std::string_view id, const Thread& t) const {
  uint64_t total;  // saturating: a wrapped total would make an exhausted thread look fresh
  if (__builtin_add_overflow(t.prompt_tokens, t.completion_tokens, &total)) total = kUnlimited;
  return ThreadUsage{std::string(id),
                     t.prompt_tokens,
                     t.completion_tokens,
                     total,
                     t.max_tokens > total ? t.max_tokens - total : 0,
                     t.max_tokens,
                     t.request_count,
                     t.reserved,
                     t.process};
}

void Engine::configure(uint64_t max_tokens_per_thread) {
  thread_default_ = max_tokens_per_thread;
  mark_counters();
}

Result<ThreadUsage> Engine::get_budget(std::string_view thread, std::string_view process) {
  catch_up();
  auto t = ensure_thread(thread, process);
  if (!t) return std::unexpected(t.error());
  return thread_view(thread, **t);
}

Result<std::optional<Refusal>> Engine::check_budget(std::string_view thread, uint64_t estimated_tokens,
                                                    std::string_view process) {
  catch_up();
  auto t = ensure_thread(thread, process);
  if (!t) return std::unexpected(t.error());
  Resolved r{find_process((*t)->process), *t, (*t)->scope, thread};
  if (r.process) r.scope = r.process->scope;
  // The estimate is a total (prompt + completion), so it is charged as unattributed
  // `tokens`: as tokens_in it would be judged against the per-call input cap.
  ChargeList c;
  if (estimated_tokens) (void)c.add(res::tokens, Decimal::from_int(estimated_tokens));
  // admit() asks the thread's own budget first, so seed 003's answer
  // (thread_budget_exhausted) wins, and names the node the thread charges.
  return admit(r, c);
}

Result<ThreadUsage> Engine::consume(std::string_view thread, uint64_t prompt_tokens, uint64_t completion_tokens,
                                    std::string_view process) {
  catch_up();
  auto t = ensure_thread(thread, process);
  if (!t) return std::unexpected(t.error());
  Thread& th = **t;
  Resolved r{find_process(th.process), &th, th.scope, thread};
  if (r.process) r.scope = r.process->scope;
  ChargeList c;
  if (prompt_tokens) (void)c.add(res::tokens_in, Decimal::from_int(prompt_tokens));
  if (completion_tokens) (void)c.add(res::tokens_out, Decimal::from_int(completion_tokens));
  ++th.request_count;
  mark_thread(thread, th);
  charge(r, c, nullptr);
  return thread_view(thread, th);
}

bool Engine::has_budget(std::string_view thread) const { return find_thread(thread) != nullptr; }

std::optional<ThreadUsage> Engine::get_thread_usage(std::string_view thread) const {
  const Thread* t = find_thread(thread);
  if (!t) return std::nullopt;
  return thread_view(thread, *t);
}

std::vector<ThreadUsage> Engine::get_all_thread_usage() const {
  std::vector<ThreadUsage> out;
  out.reserve(threads_.size());
  for (const auto& [id, t] : threads_) out.push_back(thread_view(id, t));
  // Seed 003's usage view lists threads by use, largest first; ties by id for stability.
  std::sort(out.begin(), out.end(), [](const ThreadUsage& a, const ThreadUsage& b) {
    return a.total_tokens != b.total_tokens ? a.total_tokens > b.total_tokens : a.id < b.id;
  });
  return out;
}

// Seed 003's reset_thread drops the budget; the next use starts a fresh one at the
// current default. The tokens stay charged on the process and the path: they were used.
bool Engine::reset_thread(std::string_view thread) {
  catch_up();
  const Thread* t = find_thread(thread);
  if (!t) return false;
  const Process* p = find_process(t->process);
  const ScopeNode* node = p ? p->scope : t->scope;
  std::string path = node ? node->path : std::string("/");
  auto final = cleanup_thread(thread);
  Event e = make_event(EventKind::reset, std::move(path));
  e.thread = std::string(thread);
  e.process = final->process;
  e.message = "Thread budget reset.";
  push_event(std::move(e));
  return true;
}

std::optional<ThreadUsage> Engine::cleanup_thread(std::string_view thread) {
  auto it = threads_.find(std::string(thread));
  if (it == threads_.end()) return std::nullopt;
  ThreadUsage final = thread_view(thread, it->second);
  // Holds naming the thread lose it; they still free the process and path on commit.
  for (auto& [id, h] : holds_)
    if (h.thread == thread) {
      h.thread.clear();
      mark_hold(id);
    }
  dirty_.threads.emplace(thread);  // gone by the time it is taken: deleted
  threads_.erase(it);
  return final;
}

}  // namespace budgetd
