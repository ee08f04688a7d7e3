#include "daemon/journal.h"

#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>
#include <sys/uio.h>
// No CODE_FILE=/CODE_LINE= pointing into this file on every entry.
#define SD_JOURNAL_SUPPRESS_LOCATION
#include <systemd/sd-journal.h>
#include <unistd.h>

#include <cstdlib>
#include <memory>
#include <vector>

#include "lib/quota.h"
#include "lib/reason.h"

namespace budgetd::daemon {

namespace {

struct LogState {
  LogTarget target = LogTarget::stderr_lines;
  LogLevel level = LogLevel::info;
  std::shared_ptr<spdlog::logger> lines;
};

LogState& state() {
  static LogState s;
  return s;
}

spdlog::logger& lines() {
  LogState& s = state();
  if (!s.lines) {
    s.lines = spdlog::stderr_color_st("budgetd");
    s.lines->set_pattern("%Y-%m-%d %H:%M:%S.%e %^%-7l%$ %v");
    s.lines->set_level(spdlog::level::trace);  // filtered here, by state().level
  }
  return *s.lines;
}

int journal_priority(LogLevel l) {
  switch (l) {
    case LogLevel::debug:
      return 7;  // LOG_DEBUG
    case LogLevel::info:
      return 6;  // LOG_INFO
    case LogLevel::warning:
      return 4;  // LOG_WARNING
    case LogLevel::error:
      return 3;  // LOG_ERR
    case LogLevel::off:
      return 3;
  }
  return 6;
}

spdlog::level::level_enum spdlog_level(LogLevel l) {
  switch (l) {
    case LogLevel::debug:
      return spdlog::level::debug;
    case LogLevel::info:
      return spdlog::level::info;
    case LogLevel::warning:
      return spdlog::level::warn;
    case LogLevel::error:
      return spdlog::level::err;
    case LogLevel::off:
      return spdlog::level::off;
  }
  return spdlog::level::info;
}

LogLevel level_of(Severity s) {
  switch (s) {
    case Severity::info:
      return LogLevel::info;
    case Severity::warning:
      return LogLevel::warning;
    case Severity::error:
      return LogLevel::error;
  }
  return LogLevel::info;
}

bool enabled(LogLevel l) {
  return l != LogLevel::off && static_cast<int>(l) >= static_cast<int>(state().level);
}

void write_line(LogLevel level, std::string_view text) {
  lines().log(spdlog_level(level), "{}", text);
}

constexpr const char* kJournalSocket = "/run/systemd/journal/socket";

// Sends "KEY=value" fields as one journal entry. false when journald did not take it.
// sd_journal_sendv reports success when no journald listens (ENOENT is silent), so the
// socket is looked for first.
bool send_journal(const std::vector<std::string>& fields) {
  if (access(kJournalSocket, W_OK) != 0) return false;
  std::vector<iovec> iov;
  iov.reserve(fields.size());
  for (const auto& f : fields) iov.push_back(iovec{const_cast<char*>(f.data()), f.size()});
  return sd_journal_sendv(iov.data(), static_cast<int>(iov.size())) >= 0;
}

// Fixed ids, generated once with `systemd-id128 new`; never change them: operators filter
// on them (journalctl MESSAGE_ID=...).
constexpr std::string_view kMessageIds[] = {
    "cc1e04ec766d4681a6b03cf7670e744c",  // allocated
    "dcd502bc9aa84ea09bc71c0e8232d3ed",  // threshold_crossed
    "082f5b4f858a4238baf79f2c24c490d2",  // violation
    "6ff7cb48cbba403280ffa0bf6b9272ff",  // soft_timeout
    "fe6bbaa7c26946a8a8a911e503a1dc8a",  // timeout
    "a2eeb236db3a4d5492746c5f3633a3e4",  // reset
    "2ef6f77d06d94ba99543e7da6a51ee0f",  // limit_changed
    "21db8b25d6904f64ba59798d984cb46e",  // reservation_expired
    "97b66dc81d6e495588af16295b4d2d0e",  // pending_created
    "3d9a1d7e52714efc852b5e1ba3f1a6b4",  // pending_decided
    "317ca0f4582b4f0cb88f0f6ac986155f",  // released
};
static_assert(std::size(kMessageIds) == static_cast<std::size_t>(EventKind::released) + 1,
              "one MESSAGE_ID per EventKind");

}  // namespace

LogTarget choose_log_target() {
  if (const char* v = std::getenv("BUDGETD_LOG")) {
    std::string_view s(v);
    if (s == "journal") return LogTarget::journal;
    if (s == "stderr") return LogTarget::stderr_lines;
  }
  if (isatty(STDERR_FILENO)) return LogTarget::stderr_lines;
  // Not a terminal: the journal if one runs (entries it cannot take go to stderr anyway).
  return access(kJournalSocket, W_OK) == 0 ? LogTarget::journal : LogTarget::stderr_lines;
}

bool parse_log_level(std::string_view text, LogLevel& out) {
  if (text == "debug" || text == "trace")
    out = LogLevel::debug;
  else if (text == "info")
    out = LogLevel::info;
  else if (text == "warning" || text == "warn")
    out = LogLevel::warning;
  else if (text == "error" || text == "critical")
    out = LogLevel::error;
  else if (text == "off")
    out = LogLevel::off;
  else
    return false;
  return true;
}

void init_logging(LogTarget target, LogLevel level) {
  state().target = target;
  state().level = level;
}

void set_log_level(LogLevel level) { state().level = level; }

LogTarget log_target() { return state().target; }

void log_message(LogLevel level, std::string_view message) {
  if (!enabled(level)) return;
  if (state().target == LogTarget::journal) {
    std::vector<std::string> f;
    f.reserve(3);
    f.push_back(fmt::format("MESSAGE={}", message));
    f.push_back(fmt::format("PRIORITY={}", journal_priority(level)));
    f.emplace_back("SYSLOG_IDENTIFIER=budgetd");
    if (send_journal(f)) return;
  }
  write_line(level, message);
}

std::string_view event_message_id(EventKind k) {
  auto i = static_cast<std::size_t>(k);
  return i < std::size(kMessageIds) ? kMessageIds[i] : std::string_view();
}

std::string describe_event(const Event& e) {
  std::string s(event_kind_name(e.kind));
  if (!e.process.empty()) s += fmt::format(" process={}", e.process);
  if (!e.thread.empty()) s += fmt::format(" thread={}", e.thread);
  if (!e.path.empty()) s += fmt::format(" path={}", e.path);
  if (!e.resource.empty()) {
    s += fmt::format(" resource={} used={}", e.resource, e.used.to_string());
    if (e.limit != kUnlimitedAmount) s += fmt::format(" limit={}", e.limit.to_string());
  }
  if (e.percent != 0) s += fmt::format(" percent={}", e.percent);
  if (e.reason != Reason::none) s += fmt::format(" reason={}", reason_name(e.reason));
  if (e.action != Action::none) s += fmt::format(" action={}", action_name(e.action));
  if (e.ref != 0) s += fmt::format(" ref={}", e.ref);
  if (!e.outcome.empty()) s += fmt::format(" outcome={}", e.outcome);
  if (e.usage) {
    const ResourceUsage& u = *e.usage;
    s += fmt::format(
        " final_usage: llm_calls={} tool_calls={} agent_hops={} iterations={} tokens_in={} "
        "tokens_out={} cost={}",
        u.llm_calls, u.tool_calls, u.agent_hops, u.iterations, u.tokens_in, u.tokens_out,
        u.cost.to_string());
  }
  if (!e.message.empty()) s += fmt::format(": {}", e.message);
  return s;
}

void log_event(const Event& e) {
  const LogLevel level = level_of(event_severity(e.kind));
  if (!enabled(level)) return;
  std::string text = describe_event(e);
  if (state().target == LogTarget::journal) {
    std::vector<std::string> f;
    f.reserve(16);
    f.push_back(fmt::format("MESSAGE={}", text));
    f.push_back(fmt::format("PRIORITY={}", journal_priority(level)));
    f.emplace_back("SYSLOG_IDENTIFIER=budgetd");
    f.push_back(fmt::format("MESSAGE_ID={}", event_message_id(e.kind)));
    f.push_back(fmt::format("BUDGETD_EVENT={}", event_kind_name(e.kind)));
    if (!e.process.empty()) f.push_back(fmt::format("BUDGETD_PROCESS={}", e.process));
    if (!e.thread.empty()) f.push_back(fmt::format("BUDGETD_THREAD={}", e.thread));
    if (e.reason != Reason::none)
      f.push_back(fmt::format("BUDGETD_REASON={}", reason_name(e.reason)));
    if (!e.resource.empty()) {
      f.push_back(fmt::format("BUDGETD_RESOURCE={}", e.resource));
      f.push_back(fmt::format("BUDGETD_USED={}", e.used.to_string()));
      if (e.limit != kUnlimitedAmount)
        f.push_back(fmt::format("BUDGETD_LIMIT={}", e.limit.to_string()));
    }
    if (!e.path.empty()) f.push_back(fmt::format("BUDGETD_PATH={}", e.path));
    if (e.action != Action::none)
      f.push_back(fmt::format("BUDGETD_ACTION={}", action_name(e.action)));
    if (e.usage) {
      const ResourceUsage& u = *e.usage;
      f.push_back(fmt::format("BUDGETD_LLM_CALLS={}", u.llm_calls));
      f.push_back(fmt::format("BUDGETD_TOOL_CALLS={}", u.tool_calls));
      f.push_back(fmt::format("BUDGETD_TOKENS_IN={}", u.tokens_in));
      f.push_back(fmt::format("BUDGETD_TOKENS_OUT={}", u.tokens_out));
      f.push_back(fmt::format("BUDGETD_COST={}", u.cost.to_string()));
    }
    if (send_journal(f)) return;
  }
  write_line(level, text);
}

}  // namespace budgetd::daemon
