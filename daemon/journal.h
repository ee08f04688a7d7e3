// Logging for the daemon (only daemon/ logs: STYLE.md section 1).
//
// Two targets. The journal (sd_journal_sendv) gets structured entries: MESSAGE=,
// PRIORITY=, SYSLOG_IDENTIFIER=budgetd and, for engine events, a fixed MESSAGE_ID= per
// event kind plus BUDGETD_EVENT=, BUDGETD_PROCESS=, BUDGETD_REASON=, BUDGETD_RESOURCE=,
// BUDGETD_PATH=, so `journalctl BUDGETD_REASON=timeout_exceeded` finds every hard timeout.
// A terminal gets readable lines through spdlog instead.
//
// The target: BUDGETD_LOG=journal or BUDGETD_LOG=stderr forces one; otherwise stderr when
// it is a terminal, the journal when it is not and journald listens. An entry the journal
// cannot take (no journald running) is written to stderr, so nothing is lost silently.
#pragma once

#include <fmt/core.h>

#include <string>
#include <string_view>

#include "lib/event.h"

namespace budgetd::daemon {

enum class LogTarget { journal, stderr_lines };
enum class LogLevel { debug, info, warning, error, off };

// From BUDGETD_LOG and isatty(2), as described above.
LogTarget choose_log_target();
// The config's log_level: "trace" and "debug" (debug), "info", "warn" or "warning",
// "error" and "critical" (error), "off". false for anything else.
bool parse_log_level(std::string_view text, LogLevel& out);

// Sets the target and the minimum level. Call once at start; set_log_level on reload.
void init_logging(LogTarget target, LogLevel level);
void set_log_level(LogLevel level);
LogTarget log_target();

// A daemon message (start, reload, a closed connection, ...).
void log_message(LogLevel level, std::string_view message);

template <class... Args>
void log_debug(fmt::format_string<Args...> f, Args&&... args) {
  log_message(LogLevel::debug, fmt::format(f, std::forward<Args>(args)...));
}
template <class... Args>
void log_info(fmt::format_string<Args...> f, Args&&... args) {
  log_message(LogLevel::info, fmt::format(f, std::forward<Args>(args)...));
}
template <class... Args>
void log_warning(fmt::format_string<Args...> f, Args&&... args) {
  log_message(LogLevel::warning, fmt::format(f, std::forward<Args>(args)...));
}
template <class... Args>
void log_error(fmt::format_string<Args...> f, Args&&... args) {
  log_message(LogLevel::error, fmt::format(f, std::forward<Args>(args)...));
}

// One engine event, at its severity (lib/event.h event_severity).
void log_event(const Event& e);

// The fixed MESSAGE_ID of an event kind: 32 lowercase hex digits (journalctl MESSAGE_ID=).
std::string_view event_message_id(EventKind k);

// The human line for an event, as written to MESSAGE= and to the terminal.
std::string describe_event(const Event& e);

}  // namespace budgetd::daemon
