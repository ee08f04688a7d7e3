// A small blocking varlink client over a Unix stream socket, for budgetctl, the
// integration tests and the load generator. Not a hot path: JSON is nlohmann::json.
//
// The wire (varlink.org): each message is one JSON object followed by a NUL byte. A call is
// {"method": M, "parameters": {...}} with optional "oneway": true or "more": true; a reply
// is {"parameters": {...}}, with "continues": true inside a stream, or
// {"error": NAME, "parameters": {...}}.
//
// Every wait is a poll() with a deadline; nothing sleeps. Transport failures come back as
// the unexpected string of a std::expected; an error *reply* is a successful Reply whose
// `error` is set. A timed-out read leaves the connection usable (the late reply stays
// queued in the socket and is read next); after a closed connection every call fails.
#pragma once

#include <chrono>
#include <expected>
#include <functional>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>

namespace budgetd::client {

using Json = nlohmann::json;
using Timeout = std::chrono::milliseconds;

// Wait without a deadline.
inline constexpr Timeout kNoTimeout{-1};
inline constexpr Timeout kDefaultTimeout{std::chrono::seconds(30)};

// The transport error strings tests compare against (other failures carry strerror text).
inline constexpr std::string_view kTimedOut = "timed out";
inline constexpr std::string_view kConnectionClosed = "connection closed by the peer";

// One varlink reply.
struct Reply {
  Json parameters = Json::object();
  std::optional<std::string> error;  // the error name ("io.budgetd.QuotaExceeded"), if any
  bool continues = false;            // "continues": true (a stream of a "more" call)

  bool ok() const { return !error.has_value(); }
  // parameters["message"] when it is a string, else "".
  std::string message() const;
};

struct CallFlags {
  bool oneway = false;
  bool more = false;
};

// Builds the frame of a call (JSON text plus the terminating NUL). `parameters` null omits
// the field; anything else (even a non-object, for tests) is sent as given.
std::string encode_call(std::string_view method, const Json& parameters, CallFlags flags = {});
// Parses one message (without its NUL) into a Reply; an error says why it is not one.
std::expected<Reply, std::string> decode_reply(std::string_view message);

class VarlinkClient {
 public:
  // Connects to a Unix socket path ("@name" for the abstract namespace). The timeout
  // bounds the wait when the daemon's listen backlog is full.
  static std::expected<VarlinkClient, std::string> connect(const std::string& path,
                                                           Timeout timeout = kDefaultTimeout);
  // Adopts a connected stream socket (a socketpair end, an accepted fd). Takes ownership.
  static VarlinkClient adopt(int fd);

  VarlinkClient(VarlinkClient&& other) noexcept;
  VarlinkClient& operator=(VarlinkClient&& other) noexcept;
  VarlinkClient(const VarlinkClient&) = delete;
  VarlinkClient& operator=(const VarlinkClient&) = delete;
  ~VarlinkClient();

  // One call, one reply. The timeout bounds the whole exchange.
  std::expected<Reply, std::string> call(std::string_view method,
                                         const Json& parameters = Json::object(),
                                         Timeout timeout = kDefaultTimeout);
  // A call with "oneway": true: no reply comes.
  std::expected<void, std::string> send_oneway(std::string_view method,
                                               const Json& parameters = Json::object(),
                                               Timeout timeout = kDefaultTimeout);
  // A call with "more": true. `on_reply(reply, continues)` sees each reply in turn; return
  // false from it to stop reading (the stream is then still open on the daemon's side:
  // close this connection, or drain it yourself). Ends after the first reply without
  // "continues" (including an error reply). `timeout` bounds each wait for the next
  // reply (kNoTimeout: wait for ever, as `budgetctl watch` does).
  using StreamCallback = std::function<bool(const Reply& reply, bool continues)>;
  std::expected<void, std::string> call_more(std::string_view method, const Json& parameters,
                                             const StreamCallback& on_reply,
                                             Timeout timeout = kNoTimeout);

  // Pipelining and tests: send a call without reading its reply.
  std::expected<void, std::string> send_call(std::string_view method, const Json& parameters,
                                             CallFlags flags = {},
                                             Timeout timeout = kDefaultTimeout);
  // Sends bytes as they are: partial frames, garbage, many frames at once.
  std::expected<void, std::string> send_raw(std::string_view bytes,
                                            Timeout timeout = kDefaultTimeout);
  // The next reply, in order.
  std::expected<Reply, std::string> read_reply(Timeout timeout = kDefaultTimeout);
  // The next message's raw text (without its NUL).
  std::expected<std::string, std::string> read_message(Timeout timeout = kDefaultTimeout);
  // Waits until the peer closes the connection (true) or the timeout passes (false),
  // discarding whatever arrives meanwhile.
  bool wait_closed(Timeout timeout);

  // Replies larger than this are a transport error (default 256 MiB).
  void set_max_message_size(std::size_t bytes) { max_message_ = bytes; }
  int fd() const { return fd_; }
  bool is_open() const { return fd_ >= 0; }
  void close();
  // Half-closes the sending side (shutdown SHUT_WR): the daemon sees end of input.
  void shutdown_write();

 private:
  explicit VarlinkClient(int fd) : fd_(fd) {}
  using Clock = std::chrono::steady_clock;
  std::expected<void, std::string> write_all(std::string_view bytes, Clock::time_point deadline,
                                             bool has_deadline);
  std::expected<std::string, std::string> read_frame(Clock::time_point deadline, bool has_deadline);

  int fd_ = -1;
  std::string in_;           // bytes received and not yet returned
  std::size_t scanned_ = 0;  // in_[0, scanned_) holds no NUL
  std::size_t max_message_ = std::size_t{256} << 20;
  bool eof_ = false;
};

// The daemon's default socket: /run/budgetd/io.budgetd as root (euid 0), else
// $XDG_RUNTIME_DIR/budgetd/io.budgetd, else ./run/io.budgetd.
std::string default_socket_path();
// The socket a tool should use: `flag` (--socket) when given, else $BUDGETD_SOCKET when
// set and non-empty, else default_socket_path().
std::string resolve_socket_path(std::string_view flag = {});

}  // namespace budgetd::client
