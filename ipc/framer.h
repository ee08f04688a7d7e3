// varlink framing: on the wire every message is one JSON object followed by a NUL byte.
//
// The Framer turns a byte stream, split anywhere by the socket, into whole messages, and
// enforces the bounds that must hold before any JSON parser sees the bytes: the size of one
// message and the nesting depth of its arrays and objects (STYLE.md section 3). It is pure:
// no sockets, no event loop, no logging, no exceptions. The daemon feeds it what read()
// returned and pulls messages out; the codec parses them.
//
// Typical use (one Framer per connection):
//
//   (void)framer.feed(buf, n);             // the error, if any, also comes out of next()
//   while (auto frame = framer.next()) {
//     if (!*frame) { close_connection(frame->error()); break; }
//     handle_call(**frame);                // a view into the Framer, see next()
//   }
#pragma once

#include <cstddef>
#include <expected>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

namespace budgetd::ipc {

struct FramerLimits {
  // A budgetd call is a few hundred bytes; like Redis's 1 MB query-buffer cap, a megabyte
  // is generous for honest clients and bounds what one connection can make us hold.
  std::size_t max_message_bytes = 1 << 20;
  // Bounds the recursion of whatever walks the parsed JSON; varlink calls nest a few levels.
  std::size_t max_depth = 64;
};

enum class FrameError {
  message_too_large,  // a message (without its NUL) is longer than max_message_bytes
  too_deep,           // arrays/objects nest deeper than max_depth
};

// "message_too_large", "too_deep": stable names for logs and tests.
std::string_view frame_error_name(FrameError error);

// One result of Framer::next(): a complete message (without its NUL), or the error that
// poisoned the framer.
using Frame = std::expected<std::string_view, FrameError>;

class Framer {
 public:
  // Readable bytes guaranteed after the end of every message returned by next(). Equal to
  // simdjson::SIMDJSON_PADDING, so the codec can parse a message in place with
  //   simdjson::padded_string_view(msg.data(), msg.size(), msg.size() + Framer::kPadding)
  // instead of copying it; the codec should static_assert the two constants agree. The
  // bytes are initialized (their values are irrelevant to simdjson, but memory checkers
  // flag reads of uninitialized padding).
  static constexpr std::size_t kPadding = 64;
  // The smallest buffer allocated: room for a typical read of many small calls.
  static constexpr std::size_t kMinCapacity = 4096;
  // An idle connection keeps at most this much buffer. After a burst of large messages the
  // buffer is shrunk back at the next feed() that finds everything consumed, so one large
  // call does not pin megabytes for the lifetime of the connection.
  static constexpr std::size_t kRetainedCapacity = std::size_t{64} * 1024;

  explicit Framer(FramerLimits limits = {});
  Framer(Framer&& other) noexcept;
  Framer& operator=(Framer&& other) noexcept;
  Framer(const Framer&) = delete;
  Framer& operator=(const Framer&) = delete;
  ~Framer() = default;

  // Accepts the next `len` bytes of the stream, split anywhere. Every byte is scanned once,
  // here: size and depth are checked incrementally, so a client sending endless bytes
  // without a NUL is stopped as soon as its partial message crosses max_message_bytes, and
  // the bytes past the offending one are never copied (memory stays about the limit
  // whatever the size of the read).
  //
  // Returns the FrameError if these bytes, or earlier ones, broke a limit. A broken limit
  // poisons the framer for good: the connection is to be closed, later bytes are ignored
  // and feed() keeps returning the error. Messages completed before the offending one are
  // still returned by next() first, so the outcome does not depend on how reads split the
  // stream.
  //
  // Invalidates the views previously returned by next() (the buffer may be compacted).
  std::expected<void, FrameError> feed(const char* data, std::size_t len);

  // The next complete message, in stream order:
  //   - a view of the message without its NUL. It points into the Framer's buffer and
  //     stays valid until the next feed() or the Framer's destruction (further next()
  //     calls do not invalidate it). msg.data()[msg.size()] is the NUL, and kPadding
  //     readable bytes follow the message end (see kPadding).
  //     An empty message (a lone NUL) is returned as an empty view, not rejected here:
  //     framing only splits the stream, and the codec answers it as invalid JSON like any
  //     other malformed call.
  //   - the FrameError, once every message before the offending one has been returned;
  //     repeated on every later call.
  //   - std::nullopt when more bytes are needed.
  [[nodiscard]] std::optional<Frame> next();

  // True once a limit was broken (the connection must be closed).
  bool poisoned() const { return error_.has_value(); }
  // Bytes fed but not yet returned by next(): unread complete messages plus the partial
  // message. The daemon can use it for back-pressure (stop reading while it is large).
  std::size_t buffered_bytes() const { return end_ - read_pos_; }
  // Bytes currently allocated for the buffer (for stats and the compaction tests).
  std::size_t buffer_capacity() const { return capacity_; }
  const FramerLimits& limits() const { return limits_; }

 private:
  // Makes room for `incoming` more bytes plus kPadding after end_, compacting or
  // reallocating so that the cost stays amortized O(1) per byte.
  void make_room(std::size_t incoming);
  // Moves the unread bytes [read_pos_, end_) to the front of a buffer of `capacity` bytes.
  void reallocate(std::size_t capacity);
  void compact();
  // Appends data[0, len) to the buffer; complete_len bytes of it end with a NUL.
  void append(const char* data, std::size_t len, std::size_t complete_len);

  FramerLimits limits_;

  // Buffer layout: [0, read_pos_) consumed, [read_pos_, complete_end_) complete messages
  // each ending with its NUL, [complete_end_, end_) the partial message, then at least
  // kPadding bytes of slack up to capacity_.
  std::unique_ptr<char[]> buffer_;
  std::size_t capacity_ = 0;
  std::size_t read_pos_ = 0;
  std::size_t complete_end_ = 0;
  std::size_t end_ = 0;

  // Depth scanner state for the partial message, carried across feeds so that each byte is
  // scanned once. Reset at every NUL: a NUL always ends a frame, even inside a string
  // (JSON cannot contain a raw NUL), so a malformed message cannot skew the next one.
  std::size_t depth_ = 0;
  bool in_string_ = false;
  bool after_backslash_ = false;  // inside a string, the previous byte was an escaping '\'

  std::optional<FrameError> error_;
};

// Appends one varlink frame, `json` followed by its NUL, to `out` (the writer's half of the
// framing). `json` must not contain a NUL: a well-formed JSON text never does.
void append_frame(std::string& out, std::string_view json);

}  // namespace budgetd::ipc
