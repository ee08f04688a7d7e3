#include "daemon/procfs.h"

#include <fcntl.h>
#include <unistd.h>

#include <charconv>
#include <climits>
#include <string>

namespace budgetd::daemon {

namespace {

// Reads a small /proc file whole (they are generated on read; one read() is not enough
// for status, so loop). Bounded: /proc/PID/status is a few KiB.
std::optional<std::string> read_proc_file(const std::string& path) {
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return std::nullopt;
  std::string out;
  char buf[4096];
  while (out.size() < 256 * 1024) {
    ssize_t n = read(fd, buf, sizeof buf);
    if (n < 0) {
      close(fd);
      return std::nullopt;
    }
    if (n == 0) break;
    out.append(buf, static_cast<std::size_t>(n));
  }
  close(fd);
  return out;
}

}  // namespace

std::optional<int32_t> parse_pid(std::string_view id) {
  if (id.empty() || id.size() > 10) return std::nullopt;
  for (char c : id)
    if (c < '0' || c > '9') return std::nullopt;
  int64_t v = 0;
  auto [p, ec] = std::from_chars(id.data(), id.data() + id.size(), v);
  if (ec != std::errc() || p != id.data() + id.size() || v <= 0 || v > INT32_MAX)
    return std::nullopt;
  return static_cast<int32_t>(v);
}

namespace {

// Field `n` (1-based, as proc(5) numbers them; n >= 3) of /proc/PID/stat as an integer.
// Fields are counted after the last ')', since the command name (field 2) may itself
// contain spaces and parentheses. nullopt when the process is gone.
std::optional<int64_t> stat_field(int32_t pid, int n) {
  if (pid <= 0 || n < 3) return std::nullopt;
  auto text = read_proc_file("/proc/" + std::to_string(pid) + "/stat");
  if (!text) return std::nullopt;
  std::size_t close_paren = text->rfind(')');
  if (close_paren == std::string::npos) return std::nullopt;
  std::string_view rest = std::string_view(*text).substr(close_paren + 1);
  std::string_view field;
  for (int f = 3; f <= n; ++f) {
    std::size_t b = rest.find_first_not_of(' ');
    if (b == std::string_view::npos) return std::nullopt;
    rest.remove_prefix(b);
    std::size_t e = rest.find(' ');
    field = rest.substr(0, e);
    rest.remove_prefix(e == std::string_view::npos ? rest.size() : e);
  }
  int64_t v = 0;
  auto [ptr, ec] = std::from_chars(field.data(), field.data() + field.size(), v);
  if (ec != std::errc() || ptr != field.data() + field.size() || v < 0) return std::nullopt;
  return v;
}

}  // namespace

std::optional<uint64_t> process_identity(int32_t pid) {
  auto start = stat_field(pid, 22);  // starttime, clock ticks after boot
  if (!start) return std::nullopt;
  static const std::string boot_id = read_proc_file("/proc/sys/kernel/random/boot_id").value_or("");
  // FNV-1a over the boot id, then the start time's bytes.
  uint64_t h = 1469598103934665603ull;
  auto mix = [&h](unsigned char c) { h = (h ^ c) * 1099511628211ull; };
  for (char c : boot_id) mix(static_cast<unsigned char>(c));
  for (int i = 0; i < 8; ++i) mix(static_cast<unsigned char>(static_cast<uint64_t>(*start) >> (8 * i)));
  return h;
}

std::optional<int32_t> parent_pid(int32_t pid) {
  auto ppid = stat_field(pid, 4);
  if (!ppid || *ppid > INT32_MAX) return std::nullopt;
  return static_cast<int32_t>(*ppid);
}

bool is_descendant(int32_t pid, int32_t ancestor) {
  if (pid <= 0 || ancestor <= 0) return false;
  int32_t cur = pid;
  for (int hop = 0; hop <= kMaxAncestorHops; ++hop) {
    if (cur == ancestor) return true;
    auto parent = parent_pid(cur);
    if (!parent || *parent <= 0 || *parent == cur) return false;
    cur = *parent;
  }
  return false;
}

std::optional<std::vector<uint32_t>> process_groups(int32_t pid) {
  if (pid <= 0) return std::nullopt;
  auto text = read_proc_file("/proc/" + std::to_string(pid) + "/status");
  if (!text) return std::nullopt;
  std::string_view s(*text);
  std::size_t pos = s.starts_with("Groups:") ? 0 : s.find("\nGroups:");
  if (pos == std::string_view::npos) return std::nullopt;
  if (s[pos] == '\n') ++pos;
  pos += 7;
  std::size_t eol = s.find('\n', pos);
  std::string_view line = s.substr(pos, eol == std::string_view::npos ? s.npos : eol - pos);
  std::vector<uint32_t> groups;
  std::size_t i = 0;
  while (i < line.size()) {
    while (i < line.size() && (line[i] == ' ' || line[i] == '\t')) ++i;
    if (i >= line.size()) break;
    uint32_t g = 0;
    auto [p, ec] = std::from_chars(line.data() + i, line.data() + line.size(), g);
    if (ec != std::errc()) return std::nullopt;
    groups.push_back(g);
    i = static_cast<std::size_t>(p - line.data());
  }
  return groups;
}

}  // namespace budgetd::daemon
