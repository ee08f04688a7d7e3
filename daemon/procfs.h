// Small readers of /proc, for authorization (the parent chain of a pid, a peer's groups).
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>
#include <vector>

namespace budgetd::daemon {

// A process id as the engine spells it: all ASCII digits, no sign, 1..INT32_MAX.
// Anything else (a logical id such as "env-123") is nullopt.
std::optional<int32_t> parse_pid(std::string_view id);

// The parent pid from /proc/PID/stat (field 4, read after the last ')' of the command
// name, which may itself contain spaces and parentheses). nullopt when the process is gone.
std::optional<int32_t> parent_pid(int32_t pid);

// An opaque identity of the process now running as `pid`: its start time (field 22 of
// /proc/PID/stat, clock ticks since boot) mixed with this boot's id, so the same pid with
// the same start time after a reboot is still another process. nullopt when it is gone.
// The store keeps it so that recovery never adopts a pid that was reused meanwhile.
std::optional<uint64_t> process_identity(int32_t pid);

// Is `pid` equal to `ancestor` or below it in the process tree? Follows at most
// kMaxAncestorHops parents, so a crafted or changing tree cannot make it loop.
inline constexpr int kMaxAncestorHops = 64;
bool is_descendant(int32_t pid, int32_t ancestor);

// The supplementary groups of a live process, from the "Groups:" line of
// /proc/PID/status. nullopt when the process is gone or the line is missing.
std::optional<std::vector<uint32_t>> process_groups(int32_t pid);

}  // namespace budgetd::daemon
