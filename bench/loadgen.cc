// loadgen: a closed-loop load generator for budgetd, redis-server and the bare echo server
// (bench/echo_server.cc), over a Unix socket on this machine. See bench/README.md.
//
//   loadgen --socket PATH --mode MODE [-c CONNECTIONS] [-p PIPELINE] [-d SECONDS | -n REQUESTS]
//           [--seed N] [--threads T] [--processes K] [--connect-timeout SECONDS] [--json]
//
// Each connection keeps PIPELINE calls in flight: it sends that many, and sends one more
// for every reply (replies come in order, so a FIFO of send times gives each call's
// latency). Every reply is checked, and where the server keeps a count the total is checked
// against it at the end. Latencies go to a log-linear histogram (HdrHistogram-style, below).
// The exit status is 0 only when every call was answered correctly and the counts agree.
#include <fmt/core.h>
#include <fmt/format.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iterator>
#include <optional>
#include <string>
#include <string_view>
#include <functional>
#include <thread>
#include <vector>

namespace {

int64_t now_ns() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return int64_t{ts.tv_sec} * 1'000'000'000 + ts.tv_nsec;
}

// ---------------------------------------------------------------------------------------
// Latency histogram, log-linear as HdrHistogram: values below 256 ns are counted exactly;
// above, each power of two [2^e, 2^(e+1)) is cut into 128 equal buckets, so a bucket is at
// most 1/128 (0.8%) of its values wide. Up to 2^34 ns (17 s); longer values land in the
// last bucket, and the exact maximum is kept apart. 3584 counters, 28 KiB.
class Histogram {
 public:
  static constexpr int kSubBits = 7;
  static constexpr uint64_t kSub = uint64_t{1} << kSubBits;
  static constexpr uint64_t kLinear = 2 * kSub;
  static constexpr int kTopExp = 34;
  static constexpr std::size_t kBuckets = kLinear + (kTopExp - kSubBits - 1) * kSub;
  static constexpr uint64_t kTop = (uint64_t{1} << kTopExp) - 1;

  Histogram() : counts_(kBuckets, 0) {}

  void record(uint64_t ns) {
    ++counts_[index(std::min(ns, kTop))];
    ++count_;
    sum_ += ns;
    max_ = std::max(max_, ns);
  }

  void merge(const Histogram& o) {
    for (std::size_t i = 0; i < kBuckets; ++i) counts_[i] += o.counts_[i];
    count_ += o.count_;
    sum_ += o.sum_;
    max_ = std::max(max_, o.max_);
  }

  uint64_t count() const { return count_; }
  uint64_t max() const { return max_; }
  double mean() const {
    return count_ ? static_cast<double>(sum_) / static_cast<double>(count_) : 0;
  }

  // The smallest value v such that at least p% of the values are <= v, reported as the
  // highest value of its bucket (as HdrHistogram does), never above the exact maximum.
  uint64_t percentile(double p) const {
    if (count_ == 0) return 0;
    auto target = static_cast<uint64_t>(std::ceil(p / 100.0 * static_cast<double>(count_)));
    target = std::clamp<uint64_t>(target, 1, count_);
    uint64_t seen = 0;
    for (std::size_t i = 0; i < kBuckets; ++i) {
      seen += counts_[i];
      if (seen >= target) return std::min(highest(i), max_);
    }
    return max_;
  }

  static std::size_t index(uint64_t v) {
    if (v < kLinear) return v;
    const int e = std::bit_width(v) - 1;  // >= kSubBits + 1
    const int shift = e - kSubBits;
    return kLinear + static_cast<std::size_t>(e - kSubBits - 1) * kSub + ((v >> shift) - kSub);
  }

  static uint64_t highest(std::size_t i) {
    if (i < kLinear) return i;
    const std::size_t k = i - kLinear;
    const int e = static_cast<int>(k / kSub) + kSubBits + 1;
    const uint64_t mantissa = kSub + k % kSub;
    return ((mantissa + 1) << (e - kSubBits)) - 1;
  }

 private:
  std::vector<uint64_t> counts_;
  uint64_t count_ = 0;
  uint64_t sum_ = 0;
  uint64_t max_ = 0;
};

// ---------------------------------------------------------------------------------------
// Options.

enum class Mode {
  record,
  record_oneway,
  consume,
  reserve_commit,
  check,
  allocate,
  echo,
  redis_incrby,
  redis_evalsha
};

constexpr std::pair<std::string_view, Mode> kModes[] = {
    {"record", Mode::record},
    {"record-oneway", Mode::record_oneway},
    {"consume", Mode::consume},
    {"reserve-commit", Mode::reserve_commit},
    {"check", Mode::check},
    {"allocate", Mode::allocate},
    {"echo", Mode::echo},
    {"redis-incrby", Mode::redis_incrby},
    {"redis-evalsha", Mode::redis_evalsha},
};

std::string_view mode_name(Mode m) {
  for (auto [name, mode] : kModes)
    if (mode == m) return name;
  return "?";
}

bool is_redis(Mode m) { return m == Mode::redis_incrby || m == Mode::redis_evalsha; }

struct Options {
  std::string socket;
  Mode mode = Mode::record;
  int connections = 1;
  int pipeline = 1;
  double duration = 1.0;
  uint64_t requests = 0;  // > 0: a fixed count of operations instead of a duration
  uint64_t seed = 1;
  int threads = 1;
  uint64_t processes = 0;  // record: > 0 spreads the reports over this many process ids
  double connect_timeout = 5.0;
  double drain_timeout = 10.0;  // after the end, how long replies may still take
  bool json = false;
};

[[noreturn]] void usage(int status) {
  std::FILE* to = status == 0 ? stdout : stderr;
  fmt::print(
      to,
      "Usage: loadgen --socket PATH --mode MODE [options]\n"
      "\n"
      "  --mode MODE            record, record-oneway, consume, reserve-commit, check, allocate\n"
      "                         (budgetd); echo (bench/echo_server); redis-incrby, redis-evalsha "
      "(redis-server)\n"
      "  -c, --connections N    connections (default 1)\n"
      "  -p, --pipeline P       calls in flight per connection (default 1); record-oneway: calls\n"
      "                         per write\n"
      "  -d, --duration S       run for S seconds (default 1)\n"
      "  -n, --requests N       or run exactly N operations in total\n"
      "  --seed N               seed of the token amounts (default 1)\n"
      "  --threads T            event loops, connections spread over them (default 1)\n"
      "  --processes K          record: report on K processes (lg-k0 .. lg-k<K-1>), picked at\n"
      "                         random per call, instead of one per connection\n"
      "  --connect-timeout S    retry connecting while the socket is missing or refusing (default "
      "5)\n"
      "  --json                 print one JSON object instead of text\n");
  std::exit(status);
}

template <typename T>
T parse_number(std::string_view name, std::string_view v) {
  T out{};
  auto [p, ec] = std::from_chars(v.data(), v.data() + v.size(), out);
  if (ec != std::errc{} || p != v.data() + v.size()) {
    fmt::print(stderr, "loadgen: {}: not a number: {}\n", name, v);
    usage(2);
  }
  return out;
}

double parse_seconds(std::string_view name, std::string_view v) {
  char* end = nullptr;
  std::string s(v);
  double d = std::strtod(s.c_str(), &end);
  if (end == s.c_str() || *end != '\0' || !(d > 0)) {
    fmt::print(stderr, "loadgen: {}: not a positive number of seconds: {}\n", name, v);
    usage(2);
  }
  return d;
}

Options parse_options(int argc, char** argv) {
  Options o;
  bool have_mode = false;
  for (int i = 1; i < argc; ++i) {
    std::string_view a = argv[i];
    if (a == "--help" || a == "-h") usage(0);
    if (a == "--json") {
      o.json = true;
      continue;
    }
    std::string_view value;
    std::string_view name = a;
    if (auto eq = a.find('='); a.starts_with("--") && eq != std::string_view::npos) {
      name = a.substr(0, eq);
      value = a.substr(eq + 1);
    } else {
      if (i + 1 >= argc) {
        fmt::print(stderr, "loadgen: {} needs a value\n", a);
        usage(2);
      }
      value = argv[++i];
    }
    if (name == "--socket") {
      o.socket = value;
    } else if (name == "--mode") {
      auto it = std::find_if(std::begin(kModes), std::end(kModes),
                             [&](auto& m) { return m.first == value; });
      if (it == std::end(kModes)) {
        fmt::print(stderr, "loadgen: unknown mode {}\n", value);
        usage(2);
      }
      o.mode = it->second;
      have_mode = true;
    } else if (name == "-c" || name == "--connections") {
      o.connections = parse_number<int>(name, value);
    } else if (name == "-p" || name == "--pipeline") {
      o.pipeline = parse_number<int>(name, value);
    } else if (name == "-d" || name == "--duration") {
      o.duration = parse_seconds(name, value);
    } else if (name == "-n" || name == "--requests") {
      o.requests = parse_number<uint64_t>(name, value);
    } else if (name == "--seed") {
      o.seed = parse_number<uint64_t>(name, value);
    } else if (name == "--threads") {
      o.threads = parse_number<int>(name, value);
    } else if (name == "--processes") {
      o.processes = parse_number<uint64_t>(name, value);
    } else if (name == "--connect-timeout") {
      o.connect_timeout = parse_seconds(name, value);
    } else {
      fmt::print(stderr, "loadgen: unknown option {}\n", a);
      usage(2);
    }
  }
  if (o.socket.empty() || !have_mode) usage(2);
  if (o.connections < 1 || o.connections > 100000 || o.pipeline < 1 || o.pipeline > 100000 ||
      o.threads < 1) {
    fmt::print(stderr, "loadgen: connections, pipeline and threads must be >= 1\n");
    usage(2);
  }
  o.threads = std::min(o.threads, o.connections);
  if (o.processes > 0 && o.mode != Mode::record) {
    fmt::print(stderr, "loadgen: --processes is for --mode record\n");
    usage(2);
  }
  if (o.processes > 100'000'000) {
    fmt::print(stderr, "loadgen: --processes: at most 100000000\n");
    usage(2);
  }
  return o;
}

// ---------------------------------------------------------------------------------------
// Replies.

// The unsigned integer after "key": (quoted or not) in a JSON text, without parsing it.
std::optional<uint64_t> json_uint(std::string_view text, std::string_view key) {
  std::string needle = fmt::format("\"{}\":", key);
  auto at = text.find(needle);
  if (at == std::string_view::npos) return std::nullopt;
  std::size_t p = at + needle.size();
  while (p < text.size() && (text[p] == ' ' || text[p] == '"')) ++p;
  uint64_t v = 0;
  auto [end, ec] = std::from_chars(text.data() + p, text.data() + text.size(), v);
  if (ec != std::errc{} || end == text.data() + p) return std::nullopt;
  return v;
}

bool varlink_error(std::string_view reply) { return reply.starts_with("{\"error\""); }

// The length of the one RESP reply at the start of buf, 0 when it is not complete yet, or
// -1 when it is malformed.
long resp_length(const char* buf, std::size_t n) {
  if (n == 0) return 0;
  const char* crlf = static_cast<const char*>(memmem(buf, n, "\r\n", 2));
  if (!crlf) return 0;
  const auto line = static_cast<std::size_t>(crlf - buf) + 2;
  switch (buf[0]) {
    case '+':
    case '-':
    case ':':
      return static_cast<long>(line);
    case '$': {
      long len = 0;
      auto [p, ec] = std::from_chars(buf + 1, crlf, len);
      if (ec != std::errc{} || p != crlf) return -1;
      if (len < 0) return static_cast<long>(line);
      const std::size_t total = line + static_cast<std::size_t>(len) + 2;
      return n >= total ? static_cast<long>(total) : 0;
    }
    case '*': {
      long items = 0;
      auto [p, ec] = std::from_chars(buf + 1, crlf, items);
      if (ec != std::errc{} || p != crlf) return -1;
      std::size_t at = line;
      for (long i = 0; i < items; ++i) {
        long l = resp_length(buf + at, n - at);
        if (l <= 0) return l;
        at += static_cast<std::size_t>(l);
      }
      return static_cast<long>(at);
    }
    default:
      return -1;
  }
}

std::optional<int64_t> resp_integer(std::string_view reply) {
  if (reply.size() < 3 || reply[0] != ':') return std::nullopt;
  int64_t v = 0;
  auto [p, ec] = std::from_chars(reply.data() + 1, reply.data() + reply.size() - 2, v);
  if (ec != std::errc{}) return std::nullopt;
  return v;
}

std::string resp_command(std::initializer_list<std::string_view> args) {
  std::string out = fmt::format("*{}\r\n", args.size());
  for (auto a : args) fmt::format_to(std::back_inserter(out), "${}\r\n{}\r\n", a.size(), a);
  return out;
}

// ---------------------------------------------------------------------------------------
// Sockets.

int connect_unix(const std::string& path, double timeout, bool nonblocking) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.size() >= sizeof(addr.sun_path)) {
    fmt::print(stderr, "loadgen: socket path too long: {}\n", path);
    std::exit(2);
  }
  std::memcpy(addr.sun_path, path.data(), path.size());
  const int64_t deadline = now_ns() + static_cast<int64_t>(timeout * 1e9);
  for (;;) {
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | (nonblocking ? SOCK_NONBLOCK : 0), 0);
    if (fd < 0) {
      fmt::print(stderr, "loadgen: socket: {}\n", std::strerror(errno));
      std::exit(1);
    }
    if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0) return fd;
    const int err = errno;
    close(fd);
    const bool retry = err == ENOENT || err == ECONNREFUSED || err == EAGAIN;
    if (!retry || now_ns() >= deadline) {
      fmt::print(stderr, "loadgen: connect {}: {}\n", path, std::strerror(err));
      std::exit(1);
    }
    timespec pause{0, 10'000'000};  // the server is not up yet: try again in 10 ms
    nanosleep(&pause, nullptr);
  }
}

// A blocking connection for set-up and the final counts.
class Control {
 public:
  explicit Control(const Options& o) : fd_(connect_unix(o.socket, o.connect_timeout, false)) {}
  ~Control() { close(fd_); }

  // A varlink call; fails the run on a transport error. Returns the reply without its NUL.
  std::string call(std::string_view json) {
    std::string msg(json);
    msg.push_back('\0');
    send_all(msg);
    for (;;) {
      if (auto nul = buf_.find('\0'); nul != std::string::npos) {
        std::string reply = buf_.substr(0, nul);
        buf_.erase(0, nul + 1);
        return reply;
      }
      read_more();
    }
  }

  // A varlink call that must succeed.
  std::string must(std::string_view json) {
    std::string reply = call(json);
    if (varlink_error(reply)) fail(fmt::format("set-up call {} failed: {}", json, reply));
    return reply;
  }

  // Many varlink calls, pipelined in windows (set-up and verification of up to millions of
  // processes would take a round trip each otherwise). on_reply(i, reply) sees them in order.
  template <class OnReply>
  void pipelined(std::size_t n, const std::function<std::string(std::size_t)>& call,
                 OnReply on_reply) {
    constexpr std::size_t kWindow = 256;
    std::size_t sent = 0, answered = 0;
    while (answered < n) {
      std::string batch;
      while (sent < n && sent - answered < kWindow) {
        batch += call(sent++);
        batch.push_back('\0');
      }
      send_all(batch);
      const std::size_t until = sent;
      while (answered < until) {
        auto nul = buf_.find('\0', off_);
        if (nul == std::string::npos) {
          buf_.erase(0, off_);
          off_ = 0;
          read_more();
          continue;
        }
        on_reply(answered++, std::string_view(buf_).substr(off_, nul - off_));
        off_ = nul + 1;
      }
    }
    buf_.erase(0, off_);
    off_ = 0;
  }

  std::string redis(std::initializer_list<std::string_view> args) {
    send_all(resp_command(args));
    for (;;) {
      long l = resp_length(buf_.data(), buf_.size());
      if (l < 0) fail("malformed RESP reply");
      if (l > 0) {
        std::string reply = buf_.substr(0, static_cast<std::size_t>(l));
        buf_.erase(0, static_cast<std::size_t>(l));
        if (reply[0] == '-') fail(fmt::format("redis: {}", reply));
        return reply;
      }
      read_more();
    }
  }

  [[noreturn]] static void fail(std::string_view why) {
    fmt::print(stderr, "loadgen: {}\n", why);
    std::exit(1);
  }

 private:
  void send_all(std::string_view data) {
    while (!data.empty()) {
      ssize_t n = send(fd_, data.data(), data.size(), MSG_NOSIGNAL);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) fail(fmt::format("send: {}", std::strerror(errno)));
      data.remove_prefix(static_cast<std::size_t>(n));
    }
  }
  void read_more() {
    char chunk[65536];
    ssize_t n = recv(fd_, chunk, sizeof(chunk), 0);
    if (n < 0 && errno == EINTR) return;
    if (n <= 0) fail(n == 0 ? "the server closed the connection" : std::strerror(errno));
    buf_.append(chunk, static_cast<std::size_t>(n));
  }

  int fd_;
  std::string buf_;
  std::size_t off_ = 0;  // pipelined(): replies before this offset are consumed
};

// ---------------------------------------------------------------------------------------
// The load.

enum class Kind : uint8_t { op, reserve, commit, final_usage };

struct Pending {
  int64_t start;
  uint32_t tokens_in;
  uint32_t tokens_out;
  Kind kind;
  uint32_t process = 0;  // --processes: which one the report was about
};

// --processes: what the answered reports added to each process, for the final check.
struct ProcessCounts {
  std::vector<uint32_t> calls;
  std::vector<uint64_t> tokens_in;
};

struct Conn {
  int fd = -1;
  int id = 0;
  std::string fixed;  // the request, when it never changes
  std::string out;
  std::size_t out_off = 0;
  std::vector<char> in;
  std::size_t in_len = 0;
  std::vector<Pending> ring;  // calls in flight, oldest first
  std::size_t head = 0;
  std::size_t count = 0;
  uint64_t budget = UINT64_MAX;  // operations this connection may still start
  uint64_t issued = 0;
  uint64_t ok = 0;
  uint64_t tokens_in_sum = 0;  // of the usage reports that count (see verification)
  uint64_t rng = 0;
  bool want_out = false;
  bool final_sent = false;
  bool done = false;
};

uint64_t splitmix(uint64_t& s) {
  uint64_t z = (s += 0x9e3779b97f4a7c15);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9;
  z = (z ^ (z >> 27)) * 0x94d049bb133111eb;
  return z ^ (z >> 31);
}

class Worker {
 public:
  Worker(const Options& o, std::vector<Conn*> conns) : o_(o), conns_(std::move(conns)) {
    if (o.processes > 0) {
      counts.calls.assign(o.processes, 0);
      counts.tokens_in.assign(o.processes, 0);
    }
  }

  void run();

  Histogram hist;
  ProcessCounts counts;
  uint64_t ok = 0;
  uint64_t errors = 0;
  std::string first_error;
  int64_t start = 0;
  int64_t end = 0;

 private:
  bool oneway() const { return o_.mode == Mode::record_oneway; }
  bool can_issue(const Conn& c) const { return !stopping_ && c.budget > 0; }
  bool flushed(const Conn& c) const { return c.out_off == c.out.size(); }

  void push(Conn& c, Pending p) {
    c.ring[(c.head + c.count) % c.ring.size()] = p;
    ++c.count;
  }
  Pending pop(Conn& c) {
    Pending p = c.ring[c.head];
    c.head = (c.head + 1) % c.ring.size();
    --c.count;
    return p;
  }

  void error(std::string_view what) {
    ++errors;
    if (first_error.empty()) first_error = std::string(what.substr(0, 300));
  }

  void append_request(Conn& c, int64_t now);
  void fill(Conn& c, int64_t now);
  void flush(Conn& c);
  void set_want_out(Conn& c, bool want);
  void on_readable(Conn& c);
  void on_reply(Conn& c, std::string_view reply, int64_t now);
  void drop(Conn& c, std::string_view why);
  void check_done(Conn& c);

  const Options& o_;
  std::vector<Conn*> conns_;
  int ep_ = -1;
  bool stopping_ = false;
  std::size_t active_ = 0;
};

// Appends one operation's first call and notes it in flight (except oneway calls).
void Worker::append_request(Conn& c, int64_t now) {
  ++c.issued;
  if (c.budget != UINT64_MAX) --c.budget;
  if (!c.fixed.empty()) {
    c.out += c.fixed;
    push(c, {now, 0, 0, Kind::op});
    return;
  }
  const auto tin = static_cast<uint32_t>(1 + splitmix(c.rng) % 1000);
  const auto tout = static_cast<uint32_t>(1 + splitmix(c.rng) % 500);
  auto it = std::back_inserter(c.out);
  switch (o_.mode) {
    case Mode::record:
      if (o_.processes > 0) {
        const auto k = static_cast<uint32_t>(splitmix(c.rng) % o_.processes);
        fmt::format_to(it,
                       "{{\"method\":\"io.budgetd.Agent.RecordUsage\",\"parameters\":{{\"process\":"
                       "\"lg-k{}\",\"llm_calls\":1,\"tokens_in\":{},\"tokens_out\":{}}}}}",
                       k, tin, tout);
        c.out.push_back('\0');
        push(c, {now, tin, tout, Kind::op, k});
        return;
      }
      [[fallthrough]];
    case Mode::record_oneway:
    case Mode::echo:
      fmt::format_to(
          it,
          "{{\"method\":\"io.budgetd.Agent.RecordUsage\",\"parameters\":{{\"process\":\"lg-{}\","
          "\"llm_calls\":1,\"tokens_in\":{},\"tokens_out\":{}}}{}}}",
          c.id, tin, tout, oneway() ? ",\"oneway\":true" : "");
      c.out.push_back('\0');
      if (oneway())
        c.tokens_in_sum += tin;
      else
        push(c, {now, tin, tout, Kind::op});
      return;
    case Mode::allocate:
      // A fresh logical process each time, with the default quota (as most agents get).
      fmt::format_to(it,
                     "{{\"method\":\"io.budgetd.Agent.Allocate\",\"parameters\":{{\"process\":"
                     "\"lg-a{}-{}\"}}}}",
                     c.id, c.issued);
      c.out.push_back('\0');
      push(c, {now, 0, 0, Kind::op});
      return;
    case Mode::reserve_commit:
      fmt::format_to(
          it,
          "{{\"method\":\"io.budgetd.Agent.Reserve\",\"parameters\":{{\"process\":\"lg-{}\","
          "\"llm_calls\":1,\"tokens_in\":{}}}}}",
          c.id, tin);
      c.out.push_back('\0');
      push(c, {now, tin, tout, Kind::reserve});
      return;
    default:
      Control::fail("no request for this mode");
  }
}

void Worker::set_want_out(Conn& c, bool want) {
  if (c.want_out == want || c.done) return;
  c.want_out = want;
  epoll_event ev{};
  ev.events = want ? uint32_t{EPOLLIN | EPOLLOUT} : uint32_t{EPOLLIN};
  ev.data.ptr = &c;
  epoll_ctl(ep_, EPOLL_CTL_MOD, c.fd, &ev);
}

void Worker::flush(Conn& c) {
  while (c.out_off < c.out.size()) {
    ssize_t n =
        send(c.fd, c.out.data() + c.out_off, c.out.size() - c.out_off, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n > 0) {
      c.out_off += static_cast<std::size_t>(n);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      set_want_out(c, true);
      return;
    }
    return drop(c, fmt::format("send: {}", std::strerror(errno)));
  }
  c.out.clear();
  c.out_off = 0;
  // A oneway sender wants to hear whenever the socket can take more.
  set_want_out(c, oneway() && !c.final_sent);
}

// Tops the connection up to its pipeline depth (oneway: writes batches while the socket
// takes them, then asks for the final count), and writes.
void Worker::fill(Conn& c, int64_t now) {
  if (c.done) return;
  if (oneway()) {
    for (int batch = 0; batch < 16 && flushed(c) && can_issue(c); ++batch) {
      for (int i = 0; i < o_.pipeline && can_issue(c); ++i) append_request(c, now);
      flush(c);
      if (c.done) return;
    }
    if (!can_issue(c) && flushed(c) && !c.final_sent) {
      fmt::format_to(
          std::back_inserter(c.out),
          "{{\"method\":\"io.budgetd.Agent.GetUsage\",\"parameters\":{{\"process\":\"lg-{}\"}}}}",
          c.id);
      c.out.push_back('\0');
      c.final_sent = true;
      push(c, {now, 0, 0, Kind::final_usage});
      flush(c);
    }
    return;
  }
  while (c.count < static_cast<std::size_t>(o_.pipeline) && can_issue(c)) append_request(c, now);
  flush(c);
}

void Worker::drop(Conn& c, std::string_view why) {
  if (c.done) return;
  // A oneway connection that never got its final count has nothing of its own verified.
  const uint64_t lost = oneway() ? std::max<uint64_t>(c.issued, 1) : c.count;
  if (lost > 0) {
    errors += lost;
    if (first_error.empty())
      first_error = fmt::format("connection {}: {} ({} calls unverified)", c.id, why, lost);
  }
  c.count = 0;
  epoll_ctl(ep_, EPOLL_CTL_DEL, c.fd, nullptr);
  close(c.fd);
  c.fd = -1;
  c.done = true;
  --active_;
}

void Worker::check_done(Conn& c) {
  if (c.done) return;
  const bool finished =
      oneway() ? c.final_sent && c.count == 0 : !can_issue(c) && c.count == 0 && flushed(c);
  if (!finished) return;
  epoll_ctl(ep_, EPOLL_CTL_DEL, c.fd, nullptr);
  c.done = true;
  --active_;
}

void Worker::on_reply(Conn& c, std::string_view reply, int64_t now) {
  if (c.count == 0) return error(fmt::format("connection {}: a reply to no call: {}", c.id, reply));
  Pending p = pop(c);
  if (p.kind == Kind::final_usage) {
    // record-oneway: the usage the daemon has now is exactly what it was sent.
    auto calls = json_uint(reply, "llm_calls");
    auto tokens = json_uint(reply, "tokens_in");
    if (!varlink_error(reply) && calls == c.issued && tokens == c.tokens_in_sum) {
      c.ok = c.issued;
      ok += c.issued;
      end = std::max(end, now);
      return;
    }
    c.ok = std::min(calls.value_or(0), c.issued);
    ok += c.ok;
    errors += std::max<uint64_t>(c.issued - c.ok, 1);
    if (first_error.empty())
      first_error =
          fmt::format("connection {}: sent {} oneway calls with tokens_in {}, GetUsage says {}",
                      c.id, c.issued, c.tokens_in_sum, reply);
    return;
  }
  const bool redis = is_redis(o_.mode);
  bool good = redis ? !reply.empty() && reply[0] != '-' : !varlink_error(reply);
  if (good) {
    switch (p.kind) {
      case Kind::reserve: {
        auto id = json_uint(reply, "reservation_id");
        if (!id) break;
        fmt::format_to(
            std::back_inserter(c.out),
            "{{\"method\":\"io.budgetd.Agent.Commit\",\"parameters\":{{\"reservation_id\":{},"
            "\"llm_calls\":1,\"tokens_in\":{},\"tokens_out\":{}}}}}",
            *id, p.tokens_in, p.tokens_out);
        c.out.push_back('\0');
        push(c, {p.start, p.tokens_in, p.tokens_out, Kind::commit});
        return;
      }
      case Kind::final_usage:
        break;
      case Kind::commit:
        good = reply.find("\"expired\":false") != std::string_view::npos;
        break;
      case Kind::op:
        if (o_.mode == Mode::consume)
          good = reply.find("\"status\":\"APPROVED\"") != std::string_view::npos;
        else if (o_.mode == Mode::check)
          good = reply.find("\"within\":true") != std::string_view::npos;
        else if (o_.mode == Mode::record)
          good = reply.starts_with("{\"parameters\":{\"usage\":");
        else if (o_.mode == Mode::allocate)
          good = reply.find("\"allocated\":true") != std::string_view::npos;
        else if (o_.mode == Mode::redis_evalsha)
          good = resp_integer(reply).value_or(-1) >= 0;  // -1: the script refused
        else if (o_.mode == Mode::redis_incrby)
          good = resp_integer(reply).has_value();
        break;
    }
  }
  if (!good) return error(fmt::format("connection {}: {}", c.id, reply));
  ++c.ok;
  ++ok;
  if (o_.processes > 0) {
    ++counts.calls[p.process];
    counts.tokens_in[p.process] += p.tokens_in;
  } else if (o_.mode == Mode::record || o_.mode == Mode::reserve_commit) {
    c.tokens_in_sum += p.tokens_in;
  }
  hist.record(static_cast<uint64_t>(now - p.start));
  end = std::max(end, now);
}

void Worker::on_readable(Conn& c) {
  if (c.in.size() - c.in_len < 16384) c.in.resize(std::max<std::size_t>(c.in.size() * 2, 65536));
  ssize_t n = recv(c.fd, c.in.data() + c.in_len, c.in.size() - c.in_len, MSG_DONTWAIT);
  if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) return;
  if (n <= 0) return drop(c, n == 0 ? "the server closed the connection" : std::strerror(errno));
  c.in_len += static_cast<std::size_t>(n);
  const int64_t now = now_ns();
  std::size_t at = 0;
  const char* buf = c.in.data();
  if (is_redis(o_.mode)) {
    while (at < c.in_len) {
      long l = resp_length(buf + at, c.in_len - at);
      if (l < 0) return drop(c, "malformed RESP reply");
      if (l == 0) break;
      on_reply(c, std::string_view(buf + at, static_cast<std::size_t>(l)), now);
      at += static_cast<std::size_t>(l);
    }
  } else {
    while (at < c.in_len) {
      const void* nul = std::memchr(buf + at, '\0', c.in_len - at);
      if (!nul) break;
      const auto len = static_cast<std::size_t>(static_cast<const char*>(nul) - (buf + at));
      on_reply(c, std::string_view(buf + at, len), now);
      at += len + 1;
    }
  }
  if (at > 0) {
    std::memmove(c.in.data(), c.in.data() + at, c.in_len - at);
    c.in_len -= at;
  }
  fill(c, now);
  check_done(c);
}

void Worker::run() {
  ep_ = epoll_create1(EPOLL_CLOEXEC);
  for (Conn* c : conns_) {
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.ptr = c;
    epoll_ctl(ep_, EPOLL_CTL_ADD, c->fd, &ev);
    c->ring.resize(static_cast<std::size_t>(o_.pipeline) + 1);
  }
  active_ = conns_.size();
  start = now_ns();
  end = start;
  // A fixed count has no deadline of its own; this bounds a server that stops answering.
  const double limit = o_.requests > 0 ? 600.0 : o_.duration;
  const int64_t deadline = start + static_cast<int64_t>(limit * 1e9);
  const int64_t give_up = deadline + static_cast<int64_t>(o_.drain_timeout * 1e9);
  for (Conn* c : conns_) {
    fill(*c, start);
    check_done(*c);
  }
  epoll_event events[256];
  while (active_ > 0) {
    int64_t now = now_ns();
    if (!stopping_ && now >= deadline) {
      stopping_ = true;
      for (Conn* c : conns_) {
        fill(*c, now);
        check_done(*c);
      }
      continue;
    }
    if (now >= give_up) {
      for (Conn* c : conns_) drop(*c, "no reply before the drain timeout");
      break;
    }
    const int64_t until = stopping_ ? give_up : deadline;
    const int timeout_ms =
        static_cast<int>(std::clamp<int64_t>((until - now) / 1'000'000 + 1, 0, 100));
    int n = epoll_wait(ep_, events, 256, timeout_ms);
    for (int i = 0; i < n; ++i) {
      Conn& c = *static_cast<Conn*>(events[i].data.ptr);
      if (c.done) continue;
      if (events[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) on_readable(c);
      if (!c.done && (events[i].events & EPOLLOUT)) {
        flush(c);
        if (!c.done && oneway()) fill(c, now_ns());
        check_done(c);
      }
    }
  }
  close(ep_);
}

// ---------------------------------------------------------------------------------------
// Set-up and the final counts, on a control connection.

constexpr std::string_view kEvalScript =
    "local limit = tonumber(redis.call('GET', KEYS[1]))\n"
    "local amount = tonumber(ARGV[1])\n"
    "local used = tonumber(redis.call('GET', KEYS[2]) or '0')\n"
    "if limit ~= nil and used + amount > limit then return -1 end\n"
    "return redis.call('INCRBY', KEYS[2], amount)\n";

constexpr std::string_view kBenchLimit = "1000000000000";

bool uses_processes(Mode m) {
  return m == Mode::record || m == Mode::record_oneway || m == Mode::reserve_commit ||
         m == Mode::check;
}

struct Setup {
  uint64_t scope_used_before = 0;
  uint64_t tracked_before = 0;
};

uint64_t tracked_processes(Control& ctl) {
  std::string r = ctl.must(R"({"method":"io.budgetd.Admin.Stats"})");
  auto n = json_uint(r, "tracked_processes");
  if (!n) Control::fail(fmt::format("Admin.Stats: no tracked_processes in {}", r));
  return *n;
}

std::string process_call(std::string_view method, uint64_t k) {
  return fmt::format(R"({{"method":"io.budgetd.Agent.{}","parameters":{{"process":"lg-k{}"}}}})",
                     method, k);
}

// --processes: K fresh processes without limits, allocated pipelined.
void allocate_processes(Control& ctl, uint64_t k) {
  ctl.pipelined(k, [](std::size_t i) { return process_call("Release", i); },
                [](std::size_t, std::string_view r) {
                  if (varlink_error(r)) Control::fail(fmt::format("Release: {}", r));
                });
  ctl.pipelined(
      k,
      [](std::size_t i) {
        return fmt::format(
            R"({{"method":"io.budgetd.Agent.Allocate","parameters":{{"process":"lg-k{}","quota":{{)"
            R"("max_llm_calls":"unlimited","max_tool_calls":"unlimited","max_tokens":"unlimited",)"
            R"("timeout_seconds":"unlimited","soft_timeout_seconds":"unlimited"}}}}}})",
            i);
      },
      [](std::size_t i, std::string_view r) {
        if (r.find("\"allocated\":true") == std::string_view::npos)
          Control::fail(fmt::format("Allocate lg-k{}: {}", i, r));
      });
}

uint64_t scope_used(Control& ctl) {
  std::string r =
      ctl.must(R"({"method":"io.budgetd.Admin.GetScope","parameters":{"path":"bench"}})");
  auto at = r.find("\"resource\":\"api_call\"");
  auto used =
      at == std::string::npos ? std::nullopt : json_uint(std::string_view(r).substr(at), "used");
  if (!used) Control::fail(fmt::format("GetScope bench: no api_call usage in {}", r));
  return *used;
}

Setup set_up(const Options& o, Control& ctl, std::vector<Conn>& conns) {
  Setup s;
  if (o.processes > 0) {
    allocate_processes(ctl, o.processes);
  } else if (uses_processes(o.mode)) {
    // A fresh process per connection, with no cumulative limit and no timeout: nothing is
    // ever refused, and the final count starts from zero.
    for (const Conn& c : conns) {
      ctl.must(fmt::format(
          R"({{"method":"io.budgetd.Agent.Release","parameters":{{"process":"lg-{}"}}}})", c.id));
      std::string r = ctl.must(fmt::format(
          R"({{"method":"io.budgetd.Agent.Allocate","parameters":{{"process":"lg-{}","quota":{{)"
          R"("max_llm_calls":"unlimited","max_tool_calls":"unlimited","max_tokens":"unlimited",)"
          R"("timeout_seconds":"unlimited","soft_timeout_seconds":"unlimited"}}}}}})",
          c.id));
      if (r.find("\"allocated\":true") == std::string::npos)
        Control::fail(fmt::format("Allocate lg-{}: {}", c.id, r));
    }
  }
  if (o.mode == Mode::consume) {
    // Consume charges a scope and every ancestor; "bench" carries the limit, which must be
    // there for the check to be a real one. Each connection charges its own leaf.
    ctl.must(fmt::format(
        R"({{"method":"io.budgetd.Admin.SetLimits","parameters":{{"path":"bench","limits":[{{"resource":"api_call","hard":"{}"}}]}}}})",
        kBenchLimit));
    for (const Conn& c : conns)
      ctl.must(fmt::format(
          R"({{"method":"io.budgetd.Admin.SetLimits","parameters":{{"path":"bench/c{}"}}}})",
          c.id));
    s.scope_used_before = scope_used(ctl);
  }
  if (o.mode == Mode::allocate) s.tracked_before = tracked_processes(ctl);
  if (o.mode == Mode::redis_incrby)
    for (const Conn& c : conns) ctl.redis({"DEL", fmt::format("lg:{}", c.id)});
  std::string sha;
  if (o.mode == Mode::redis_evalsha) {
    ctl.redis({"SET", "bench:limit", kBenchLimit});
    std::string r = ctl.redis({"SCRIPT", "LOAD", kEvalScript});
    // "$40\r\n<sha>\r\n"
    auto nl = r.find("\r\n");
    sha = r.substr(nl + 2, r.size() - nl - 4);
    for (const Conn& c : conns) ctl.redis({"DEL", fmt::format("bench:c{}", c.id)});
  }
  for (Conn& c : conns) {
    switch (o.mode) {
      case Mode::consume:
        c.fixed = fmt::format(
            R"({{"method":"io.budgetd.Agent.Consume","parameters":{{"scope":"bench/c{}","resource":"api_call","amount":"1"}}}})",
            c.id);
        c.fixed.push_back('\0');
        break;
      case Mode::check:
        c.fixed = fmt::format(
            R"({{"method":"io.budgetd.Agent.CheckQuota","parameters":{{"process":"lg-{}"}}}})",
            c.id);
        c.fixed.push_back('\0');
        break;
      case Mode::redis_incrby:
        c.fixed = resp_command({"INCRBY", fmt::format("lg:{}", c.id), "1"});
        break;
      case Mode::redis_evalsha:
        c.fixed =
            resp_command({"EVALSHA", sha, "2", "bench:limit", fmt::format("bench:c{}", c.id), "1"});
        break;
      default:
        break;
    }
  }
  return s;
}

// Checks the server's own counts against the replies. Returns a description of the first
// mismatch, or "" when they agree; adds each unaccounted operation to errors.
std::string verify(const Options& o, Control& ctl, const std::vector<Conn>& conns, const Setup& s,
                   const ProcessCounts& counts, uint64_t total_ok, uint64_t& errors) {
  std::string why;
  auto mismatch = [&](uint64_t want, uint64_t got, std::string what) {
    if (want == got) return;
    errors += want > got ? want - got : got - want;
    if (why.empty()) why = std::move(what);
  };
  if (o.processes > 0) {
    // Every process holds exactly what the answered reports about it added.
    ctl.pipelined(o.processes, [](std::size_t i) { return process_call("GetUsage", i); },
                  [&](std::size_t i, std::string_view r) {
                    auto calls = json_uint(r, "llm_calls").value_or(UINT64_MAX);
                    auto tokens = json_uint(r, "tokens_in").value_or(UINT64_MAX);
                    mismatch(counts.calls[i], calls,
                             fmt::format("lg-k{}: {} calls answered, GetUsage says {}", i,
                                         counts.calls[i], r));
                    if (calls == counts.calls[i])
                      mismatch(counts.tokens_in[i], tokens,
                               fmt::format("lg-k{}: tokens_in {} sent, GetUsage says {}", i,
                                           counts.tokens_in[i], r));
                  });
    ctl.pipelined(o.processes, [](std::size_t i) { return process_call("Release", i); },
                  [](std::size_t, std::string_view) {});
    return why;
  }
  switch (o.mode) {
    case Mode::allocate: {
      const uint64_t grew = tracked_processes(ctl) - s.tracked_before;
      mismatch(total_ok, grew,
               fmt::format("{} processes allocated, tracked_processes grew by {}", total_ok, grew));
      break;
    }
    case Mode::record:
    case Mode::reserve_commit:
      for (const Conn& c : conns) {
        std::string r = ctl.must(fmt::format(
            R"({{"method":"io.budgetd.Agent.GetUsage","parameters":{{"process":"lg-{}"}}}})",
            c.id));
        auto calls = json_uint(r, "llm_calls").value_or(UINT64_MAX);
        auto tokens = json_uint(r, "tokens_in").value_or(UINT64_MAX);
        mismatch(c.ok, calls,
                 fmt::format("lg-{}: {} calls answered, GetUsage says {}", c.id, c.ok, r));
        if (calls == c.ok)
          mismatch(
              c.tokens_in_sum, tokens,
              fmt::format("lg-{}: tokens_in {} sent, GetUsage says {}", c.id, c.tokens_in_sum, r));
      }
      break;
    case Mode::consume: {
      const uint64_t used = scope_used(ctl) - s.scope_used_before;
      mismatch(
          total_ok, used,
          fmt::format("{} Consume calls approved, scope bench used grew by {}", total_ok, used));
      break;
    }
    case Mode::redis_incrby:
    case Mode::redis_evalsha:
      for (const Conn& c : conns) {
        std::string key =
            fmt::format("{}{}", o.mode == Mode::redis_incrby ? "lg:" : "bench:c", c.id);
        std::string r = ctl.redis({"GET", key});
        auto nl = r.find("\r\n");
        uint64_t v = 0;
        if (r[0] == '$' && r != "$-1\r\n")
          (void)std::from_chars(r.data() + nl + 2, r.data() + r.size(), v);
        mismatch(c.ok, v, fmt::format("{}: {} calls answered, the key holds {}", key, c.ok, v));
      }
      break;
    default:
      break;
  }
  if (uses_processes(o.mode))
    for (const Conn& c : conns)
      ctl.must(fmt::format(
          R"({{"method":"io.budgetd.Agent.Release","parameters":{{"process":"lg-{}"}}}})", c.id));
  return why;
}

std::string json_escape(std::string_view s) {
  std::string out;
  for (char ch : s) {
    auto u = static_cast<unsigned char>(ch);
    if (ch == '"' || ch == '\\')
      out += {'\\', ch};
    else if (u < 0x20)
      fmt::format_to(std::back_inserter(out), "\\u{:04x}", u);
    else
      out.push_back(ch);
  }
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  const Options o = parse_options(argc, argv);

  std::vector<Conn> conns(static_cast<std::size_t>(o.connections));
  for (int i = 0; i < o.connections; ++i) {
    Conn& c = conns[static_cast<std::size_t>(i)];
    c.id = i;
    uint64_t s = o.seed ^ (0x9e3779b97f4a7c15 * static_cast<uint64_t>(i + 1));
    c.rng = splitmix(s);
    if (o.requests > 0)
      c.budget = o.requests / conns.size() + (static_cast<uint64_t>(i) < o.requests % conns.size());
  }
  Control ctl(o);
  const Setup setup = set_up(o, ctl, conns);
  for (Conn& c : conns) c.fd = connect_unix(o.socket, o.connect_timeout, true);

  std::vector<std::vector<Conn*>> shares(static_cast<std::size_t>(o.threads));
  for (std::size_t i = 0; i < conns.size(); ++i) shares[i % shares.size()].push_back(&conns[i]);
  std::vector<Worker> workers;
  workers.reserve(shares.size());
  for (auto& share : shares) workers.emplace_back(o, std::move(share));
  if (workers.size() == 1) {
    workers[0].run();
  } else {
    std::vector<std::thread> threads;
    for (Worker& w : workers) threads.emplace_back([&w] { w.run(); });
    for (auto& t : threads) t.join();
  }
  for (Conn& c : conns)
    if (c.fd >= 0) close(c.fd);

  Histogram hist;
  ProcessCounts counts;
  counts.calls.assign(o.processes, 0);
  counts.tokens_in.assign(o.processes, 0);
  uint64_t ok = 0, errors = 0;
  std::string first_error;
  int64_t start = workers[0].start, end = workers[0].end;
  for (const Worker& w : workers) {
    hist.merge(w.hist);
    for (std::size_t i = 0; i < counts.calls.size(); ++i) {
      counts.calls[i] += w.counts.calls[i];
      counts.tokens_in[i] += w.counts.tokens_in[i];
    }
    ok += w.ok;
    errors += w.errors;
    if (first_error.empty()) first_error = w.first_error;
    start = std::min(start, w.start);
    end = std::max(end, w.end);
  }
  std::string mismatch = verify(o, ctl, conns, setup, counts, ok, errors);
  if (first_error.empty()) first_error = mismatch;
  const bool verified = mismatch.empty();
  const double elapsed = static_cast<double>(end - start) / 1e9;
  const double rate = elapsed > 0 ? static_cast<double>(ok) / elapsed : 0;
  const bool latencies = hist.count() > 0;
  auto us = [&](double p) { return static_cast<double>(hist.percentile(p)) / 1000.0; };

  if (o.json) {
    std::string lat = "null";
    if (latencies)
      lat = fmt::format(
          R"({{"p50":{:.1f},"p90":{:.1f},"p99":{:.1f},"p999":{:.1f},"max":{:.1f},"mean":{:.1f}}})",
          us(50), us(90), us(99), us(99.9), static_cast<double>(hist.max()) / 1000.0,
          hist.mean() / 1000.0);
    fmt::print(
        R"({{"mode":"{}","connections":{},"pipeline":{},"threads":{},"processes":{},"seed":{},"elapsed_s":{:.3f},"ops":{},"errors":{},)"
        R"("ops_per_s":{:.0f},"latency_us":{},"verified":{},"first_error":{}}})"
        "\n",
        mode_name(o.mode), o.connections, o.pipeline, o.threads, o.processes, o.seed, elapsed, ok, errors, rate,
        lat, verified ? "true" : "false",
        first_error.empty() ? "null" : "\"" + json_escape(first_error) + "\"");
  } else {
    fmt::print("{} {}x{}: {} ops in {:.3f} s = {:.0f} ops/s, {} errors\n", mode_name(o.mode),
               o.connections, o.pipeline, ok, elapsed, rate, errors);
    if (latencies)
      fmt::print(
          "latency us: p50 {:.1f}  p90 {:.1f}  p99 {:.1f}  p99.9 {:.1f}  max {:.1f}  mean {:.1f}\n",
          us(50), us(90), us(99), us(99.9), static_cast<double>(hist.max()) / 1000.0,
          hist.mean() / 1000.0);
    else
      fmt::print("latency: none (oneway calls have no reply)\n");
    fmt::print("verified: {}\n", verified ? "yes" : "NO");
    if (!first_error.empty()) fmt::print("first error: {}\n", first_error);
  }
  return errors == 0 && verified && ok > 0 ? 0 : 1;
}
