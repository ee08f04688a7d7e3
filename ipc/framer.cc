#include "ipc/framer.h"

#include <algorithm>
#include <cstring>
#include <utility>

namespace budgetd::ipc {

std::string_view frame_error_name(FrameError error) {
  switch (error) {
    case FrameError::message_too_large:
      return "message_too_large";
    case FrameError::too_deep:
      return "too_deep";
  }
  return "unknown_frame_error";
}

Framer::Framer(FramerLimits limits) : limits_(limits) {}

// Written out because a defaulted move would leave the source with stale offsets into a
// null buffer; the moved-from Framer is empty and usable.
Framer::Framer(Framer&& other) noexcept
    : limits_(other.limits_),
      buffer_(std::move(other.buffer_)),
      capacity_(std::exchange(other.capacity_, 0)),
      read_pos_(std::exchange(other.read_pos_, 0)),
      complete_end_(std::exchange(other.complete_end_, 0)),
      end_(std::exchange(other.end_, 0)),
      depth_(std::exchange(other.depth_, 0)),
      in_string_(std::exchange(other.in_string_, false)),
      after_backslash_(std::exchange(other.after_backslash_, false)),
      error_(std::exchange(other.error_, std::nullopt)) {}

Framer& Framer::operator=(Framer&& other) noexcept {
  if (this != &other) {
    limits_ = other.limits_;
    buffer_ = std::move(other.buffer_);
    capacity_ = std::exchange(other.capacity_, 0);
    read_pos_ = std::exchange(other.read_pos_, 0);
    complete_end_ = std::exchange(other.complete_end_, 0);
    end_ = std::exchange(other.end_, 0);
    depth_ = std::exchange(other.depth_, 0);
    in_string_ = std::exchange(other.in_string_, false);
    after_backslash_ = std::exchange(other.after_backslash_, false);
    error_ = std::exchange(other.error_, std::nullopt);
  }
  return *this;
}

std::expected<void, FrameError> Framer::feed(const char* data, std::size_t len) {
  if (error_) return std::unexpected(*error_);

  // Scan the caller's bytes before copying any: if a limit breaks, only the complete
  // messages before the offending byte are kept, so a huge read without a NUL never makes
  // us allocate more than about max_message_bytes.
  std::size_t partial_len = end_ - complete_end_;
  std::size_t complete_len = 0;  // prefix of `data` that ends with its last NUL
  std::size_t depth = depth_;
  bool in_string = in_string_;
  bool after_backslash = after_backslash_;
  std::optional<FrameError> broken;

  for (std::size_t i = 0; i < len; ++i) {
    const char c = data[i];
    if (c == '\0') {
      complete_len = i + 1;
      partial_len = 0;
      depth = 0;
      in_string = false;
      after_backslash = false;
      continue;
    }
    // Checked per byte, not at the NUL: a sender that never sends one is caught here.
    if (++partial_len > limits_.max_message_bytes) {
      broken = FrameError::message_too_large;
      break;
    }
    if (in_string) {
      // Only \" and \\ matter for finding the string's end; skipping the byte after any
      // backslash handles both (and is harmless for \n, \uXXXX, ...).
      if (after_backslash) {
        after_backslash = false;
      } else if (c == '\\') {
        after_backslash = true;
      } else if (c == '"') {
        in_string = false;
      }
    } else if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      if (++depth > limits_.max_depth) {
        broken = FrameError::too_deep;
        break;
      }
    } else if ((c == ']' || c == '}') && depth > 0) {
      // A stray closer is invalid JSON for the codec to reject; clamping keeps the count a
      // bound on real nesting instead of letting "]]]]" buy room for deeper "[[[[".
      --depth;
    }
  }

  if (broken) {
    append(data, complete_len, complete_len);
    // The offending partial message, including any part buffered by earlier feeds, is
    // dropped: it will never be returned, and the connection is about to close.
    end_ = complete_end_;
    error_ = broken;
    return std::unexpected(*broken);
  }

  append(data, len, complete_len);
  depth_ = depth;
  in_string_ = in_string;
  after_backslash_ = after_backslash;
  return {};
}

void Framer::append(const char* data, std::size_t len, std::size_t complete_len) {
  if (len == 0) return;
  make_room(len);
  std::memcpy(buffer_.get() + end_, data, len);
  if (complete_len > 0) complete_end_ = end_ + complete_len;
  end_ += len;
}

std::optional<Frame> Framer::next() {
  if (read_pos_ < complete_end_) {
    const char* start = buffer_.get() + read_pos_;
    // complete_end_ is one past a NUL, so the search always succeeds. Finding the boundary
    // again with memchr (vectorized) is cheaper than keeping a queue of message ends.
    const auto* nul = static_cast<const char*>(std::memchr(start, '\0', complete_end_ - read_pos_));
    const auto size = static_cast<std::size_t>(nul - start);
    read_pos_ += size + 1;
    return Frame(std::string_view(start, size));
  }
  if (error_) return Frame(std::unexpected(*error_));
  return std::nullopt;
}

void Framer::make_room(std::size_t incoming) {
  const std::size_t unread = end_ - read_pos_;
  if (unread == 0) {
    // Everything was consumed: restarting at offset 0 is free. It is also the moment to
    // give back a buffer grown by a burst of large messages (no bytes to copy).
    read_pos_ = complete_end_ = end_ = 0;
    if (capacity_ > kRetainedCapacity && incoming + kPadding <= kRetainedCapacity) {
      reallocate(kRetainedCapacity);
    }
  }
  if (end_ + incoming + kPadding <= capacity_) return;

  // Compact only when the consumed prefix is at least as large as the bytes to move: each
  // consumed byte pays for at most one moved byte, so many small messages in one large read
  // cost amortized O(1) per byte, never a memmove per message.
  if (read_pos_ > 0 && read_pos_ >= unread) {
    compact();
    if (end_ + incoming + kPadding <= capacity_) return;
  }
  // Doubling keeps growth amortized O(1), and reallocating compacts for free. Growth happens
  // only when the unread bytes outweigh the consumed prefix, so the new capacity stays below
  // 4 * (unread + incoming + kPadding).
  reallocate(std::max({unread + incoming + kPadding, 2 * capacity_, kMinCapacity}));
}

void Framer::compact() {
  const std::size_t unread = end_ - read_pos_;
  std::memmove(buffer_.get(), buffer_.get() + read_pos_, unread);
  complete_end_ -= read_pos_;
  end_ -= read_pos_;
  read_pos_ = 0;
}

void Framer::reallocate(std::size_t capacity) {
  const std::size_t unread = end_ - read_pos_;
  // Value-initialized: the padding after a message may lie beyond end_, and simdjson reads
  // it; zeroed bytes keep memory checkers quiet.
  auto fresh = std::make_unique<char[]>(capacity);
  if (unread > 0) std::memcpy(fresh.get(), buffer_.get() + read_pos_, unread);
  buffer_ = std::move(fresh);
  capacity_ = capacity;
  complete_end_ -= read_pos_;
  end_ -= read_pos_;
  read_pos_ = 0;
}

void append_frame(std::string& out, std::string_view json) {
  out.append(json);
  out.push_back('\0');
}

}  // namespace budgetd::ipc
