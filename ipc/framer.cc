#include "ipc/framer.h"

#include <algorithm>
#include <array>
#include <bit>
#include <cstdint>
#include <cstring>
#include <utility>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

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

namespace {

// The bytes the scanner acts on: NUL ends a frame, '"' and '\' delimit strings, brackets
// and braces nest. Everything else only counts toward the message size, so feed() finds
// the next of these a block at a time instead of looking at every byte.
constexpr std::array<bool, 256> kSpecial = [] {
  std::array<bool, 256> t{};
  for (unsigned char c : {'\0', '"', '\\', '[', ']', '{', '}'}) t[c] = true;
  return t;
}();

#if defined(__SSE2__)
// A bit per byte of data[0, 16) that may be special. (b | 0x20) folds '[' '\' ']' onto
// '{' '|' '}' and '"' stays '"'; '|' and 0x02 come along as false positives that the
// scalar switch ignores. NUL needs its own compare (0x00 | 0x20 is a space).
inline uint32_t special_mask(const char* data) {
  const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(data));
  const __m128i t = _mm_or_si128(b, _mm_set1_epi8(0x20));
  __m128i m = _mm_cmpeq_epi8(t, _mm_set1_epi8('{'));
  m = _mm_or_si128(m, _mm_cmpeq_epi8(t, _mm_set1_epi8('}')));
  m = _mm_or_si128(m, _mm_cmpeq_epi8(t, _mm_set1_epi8('|')));
  m = _mm_or_si128(m, _mm_cmpeq_epi8(t, _mm_set1_epi8('"')));
  m = _mm_or_si128(m, _mm_cmpeq_epi8(b, _mm_setzero_si128()));
  return static_cast<uint32_t>(_mm_movemask_epi8(m));
}
#endif

}  // namespace

std::expected<void, FrameError> Framer::feed(const char* data, std::size_t len) {
  if (error_) return std::unexpected(*error_);

  // Scan the caller's bytes before copying any: if a limit breaks, only the complete
  // messages before the offending byte are kept, so a huge read without a NUL never makes
  // us allocate more than about max_message_bytes.
  //
  // Only the special bytes (kSpecial) are visited, in order. The bytes between two of them
  // are counted in one step; since a message's size only grows between NULs, checking the
  // limit at each visited byte and at the end catches a crossing before the next NUL could
  // complete the message, as a byte-by-byte check would.
  std::size_t partial_len = end_ - complete_end_;
  std::size_t complete_len = 0;  // prefix of `data` that ends with its last NUL
  std::size_t depth = depth_;
  bool in_string = in_string_;
  // Inside a string, the byte at this index follows an escaping '\' and is skipped
  // (index 0 when the previous feed ended with the backslash).
  std::size_t escaped_at = after_backslash_ ? 0 : SIZE_MAX;
  std::size_t counted = 0;  // data[0, counted) is in partial_len (or ended a frame)
  std::optional<FrameError> broken;
  const std::size_t max = limits_.max_message_bytes;

  // Handles the special byte data[i]; false when it broke a limit.
  auto visit = [&](std::size_t i) -> bool {
    const char c = data[i];
    if (c == '\0') {
      partial_len += i - counted;
      if (partial_len > max) {
        broken = FrameError::message_too_large;
        return false;
      }
      counted = i + 1;
      complete_len = i + 1;
      partial_len = 0;
      depth = 0;
      in_string = false;
      escaped_at = SIZE_MAX;
      return true;
    }
    if (in_string) {
      // Only \" and \\ matter for finding the string's end; skipping the byte after any
      // backslash handles both (and is harmless for \n, \uXXXX, ...).
      if (i == escaped_at) return true;
      if (c == '\\') {
        escaped_at = i + 1;
      } else if (c == '"') {
        in_string = false;
      }
    } else if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      if (partial_len + (i + 1 - counted) > max) {  // the size is checked first, as per byte
        broken = FrameError::message_too_large;
        return false;
      }
      if (++depth > limits_.max_depth) {
        broken = FrameError::too_deep;
        return false;
      }
    } else if ((c == ']' || c == '}') && depth > 0) {
      // A stray closer is invalid JSON for the codec to reject; clamping keeps the count a
      // bound on real nesting instead of letting "]]]]" buy room for deeper "[[[[".
      --depth;
    }
    return true;
  };

  std::size_t i = 0;
#if defined(__SSE2__)
  for (; i + 16 <= len && !broken; i += 16) {
    for (uint32_t m = special_mask(data + i); m != 0; m &= m - 1) {
      const std::size_t at = i + static_cast<std::size_t>(std::countr_zero(m));
      if (kSpecial[static_cast<unsigned char>(data[at])] && !visit(at)) break;
    }
  }
#endif
  for (; i < len && !broken; ++i)
    if (kSpecial[static_cast<unsigned char>(data[i])]) (void)visit(i);
  if (!broken) {
    partial_len += len - counted;
    if (partial_len > max) broken = FrameError::message_too_large;
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
  after_backslash_ = in_string && escaped_at == len;
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
