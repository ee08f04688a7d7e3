#include "ipc/framer.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <optional>
#include <random>
#include <ostream>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace budgetd::ipc {
namespace {

using namespace std::string_literals;

// Everything a stream produced: the messages in order, then the error if one broke.
struct Outcome {
  std::vector<std::string> messages;
  std::optional<FrameError> error;
  bool operator==(const Outcome&) const = default;
};

void PrintTo(const Outcome& outcome, std::ostream* os) {
  *os << outcome.messages.size() << " messages [";
  for (const auto& m : outcome.messages) *os << '"' << m << "\" ";
  *os << "] error=" << (outcome.error ? frame_error_name(*outcome.error) : "none");
}

// Pulls every message the framer has ready into `outcome`; stops at the error.
void drain(Framer& framer, Outcome& outcome) {
  while (auto frame = framer.next()) {
    if (!*frame) {
      outcome.error = frame->error();
      return;
    }
    outcome.messages.emplace_back(**frame);
  }
}

// Feeds `stream` cut at the given ascending offsets, draining after every feed as the
// daemon does.
Outcome feed_cut_at(std::string_view stream, const std::vector<std::size_t>& cuts,
                    FramerLimits limits) {
  Framer framer(limits);
  Outcome outcome;
  std::size_t begin = 0;
  auto feed_until = [&](std::size_t end) {
    (void)framer.feed(stream.data() + begin, end - begin);
    begin = end;
    drain(framer, outcome);
  };
  for (std::size_t cut : cuts) feed_until(cut);
  feed_until(stream.size());
  return outcome;
}

Outcome feed_whole(std::string_view stream, FramerLimits limits = {}) {
  return feed_cut_at(stream, {}, limits);
}

Outcome feed_byte_by_byte(std::string_view stream, FramerLimits limits = {}) {
  std::vector<std::size_t> cuts;
  for (std::size_t i = 1; i < stream.size(); ++i) cuts.push_back(i);
  return feed_cut_at(stream, cuts, limits);
}

// Checks that every split of `stream` into two and three feeds, and byte by byte, yields
// `expected`: framing and the incremental depth/size scan must not depend on read sizes.
void expect_split_independent(std::string_view stream, const Outcome& expected,
                              FramerLimits limits) {
  ASSERT_EQ(feed_whole(stream, limits), expected);
  ASSERT_EQ(feed_byte_by_byte(stream, limits), expected);
  for (std::size_t i = 0; i <= stream.size(); ++i) {
    ASSERT_EQ(feed_cut_at(stream, {i}, limits), expected) << "cut at " << i;
    for (std::size_t j = i; j <= stream.size(); ++j) {
      ASSERT_EQ(feed_cut_at(stream, {i, j}, limits), expected) << "cuts at " << i << ", " << j;
    }
  }
}

std::string frames(const std::vector<std::string>& messages) {
  std::string out;
  for (const auto& m : messages) append_frame(out, m);
  return out;
}

// A string of `len` bytes that is valid JSON at depth 0: "aaa...".
std::string json_string_of_length(std::size_t len) { return '"' + std::string(len - 2, 'a') + '"'; }

std::string nested_arrays(std::size_t depth) {
  return std::string(depth, '[') + std::string(depth, ']');
}

// --- framing ---------------------------------------------------------------------------

TEST(Framer, ThreeMessagesSurviveEverySplit) {
  const std::vector<std::string> messages = {
      R"({"method":"io.budgetd.Agent.RecordUsage","oneway":true,"parameters":{"tokens":12}})",
      // Brackets and an escaped quote inside strings: depth stays 3 only if the scanner
      // tracks strings correctly across every cut.
      R"({"a":"\"[[[[{{","b":[[1],{"c":"\\"}]})",
      R"({"method":"io.budgetd.Usage.Stats"})",
  };
  expect_split_independent(frames(messages), Outcome{messages, std::nullopt},
                           FramerLimits{.max_message_bytes = 128, .max_depth = 3});
}

TEST(Framer, ManyMessagesInOneChunk) {
  std::vector<std::string> messages;
  for (int i = 0; i < 100'000; ++i) messages.push_back(R"({"n":)" + std::to_string(i) + "}");
  const std::string stream = frames(messages);

  Framer framer;
  ASSERT_TRUE(framer.feed(stream.data(), stream.size()));
  // The whole read is buffered once; pulling messages moves no bytes.
  EXPECT_LE(framer.buffer_capacity(), stream.size() + Framer::kPadding + Framer::kMinCapacity);
  Outcome outcome;
  drain(framer, outcome);
  EXPECT_EQ(outcome, (Outcome{messages, std::nullopt}));
  EXPECT_EQ(framer.buffered_bytes(), 0u);
}

TEST(Framer, NeedsMoreBytesUntilTheNul) {
  Framer framer;
  const std::string partial = R"({"method":"x")";
  ASSERT_TRUE(framer.feed(partial.data(), partial.size()));
  EXPECT_FALSE(framer.next().has_value());
  EXPECT_EQ(framer.buffered_bytes(), partial.size());
  ASSERT_TRUE(framer.feed("}\0", 2));
  auto frame = framer.next();
  ASSERT_TRUE(frame && *frame);
  EXPECT_EQ(**frame, R"({"method":"x"})");
  EXPECT_FALSE(framer.next().has_value());
}

TEST(Framer, EmptyMessageIsReturnedEmpty) {
  // Framing only splits; the codec rejects the empty text as invalid JSON.
  const std::string stream = "\0{}\0\0"s;
  expect_split_independent(stream, Outcome{{"", "{}", ""}, std::nullopt}, FramerLimits{});
}

TEST(Framer, ViewsStayValidUntilTheNextFeedAndArePadded) {
  Framer framer;
  const std::string stream = frames({"{}", R"({"a":1})", "[]"});
  ASSERT_TRUE(framer.feed(stream.data(), stream.size()));
  std::vector<std::string_view> views;
  while (auto frame = framer.next()) {
    ASSERT_TRUE(*frame);
    views.push_back(**frame);
  }
  ASSERT_EQ(views.size(), 3u);
  EXPECT_EQ(views[0], "{}");
  EXPECT_EQ(views[1], R"({"a":1})");
  EXPECT_EQ(views[2], "[]");
  for (std::string_view view : views) {
    EXPECT_EQ(view.data()[view.size()], '\0');
    // simdjson reads past the end; under ASan this proves the padding is allocated.
    unsigned sum = 0;
    for (std::size_t i = 0; i < Framer::kPadding; ++i) {
      sum += static_cast<unsigned char>(view.data()[view.size() + i]);
    }
    (void)sum;
  }
}

TEST(Framer, AppendFrameAddsTheNul) {
  std::string out = "x";
  append_frame(out, R"({"a":1})");
  append_frame(out, "");
  EXPECT_EQ(out, "x{\"a\":1}\0\0"s);
}

TEST(Framer, ErrorNames) {
  EXPECT_EQ(frame_error_name(FrameError::message_too_large), "message_too_large");
  EXPECT_EQ(frame_error_name(FrameError::too_deep), "too_deep");
}

TEST(Framer, MoveKeepsThePartialMessage) {
  Framer framer;
  ASSERT_TRUE(framer.feed("{\"a\":", 5));
  Framer moved = std::move(framer);
  ASSERT_TRUE(moved.feed("1}\0", 3));
  auto frame = moved.next();
  ASSERT_TRUE(frame && *frame);
  EXPECT_EQ(**frame, R"({"a":1})");
  // The moved-from framer is empty and still usable.
  ASSERT_TRUE(framer.feed("{}\0", 3));  // NOLINT(bugprone-use-after-move)
  frame = framer.next();
  ASSERT_TRUE(frame && *frame);
  EXPECT_EQ(**frame, "{}");
}

// --- message size limit --------------------------------------------------------------

constexpr FramerLimits kSmall{.max_message_bytes = 16, .max_depth = 8};

TEST(FramerSizeLimit, ExactlyAtLimitIsAccepted) {
  const std::string at_limit = json_string_of_length(16);
  expect_split_independent(frames({at_limit}), Outcome{{at_limit}, std::nullopt}, kSmall);
}

TEST(FramerSizeLimit, ExactlyAtLimitWithoutNulIsStillPending) {
  Framer framer(kSmall);
  const std::string at_limit = json_string_of_length(16);
  ASSERT_TRUE(framer.feed(at_limit.data(), at_limit.size()));
  EXPECT_FALSE(framer.next().has_value());
  ASSERT_TRUE(framer.feed("\0", 1));
  auto frame = framer.next();
  ASSERT_TRUE(frame && *frame);
  EXPECT_EQ(**frame, at_limit);
}

TEST(FramerSizeLimit, OneOverLimitWithNulIsRejected) {
  const std::string over = json_string_of_length(17);
  expect_split_independent(frames({over}), Outcome{{}, FrameError::message_too_large}, kSmall);
}

TEST(FramerSizeLimit, OneOverLimitIsRejectedBeforeTheNul) {
  Framer framer(kSmall);
  const std::string over = json_string_of_length(17);
  auto fed = framer.feed(over.data(), over.size());
  ASSERT_FALSE(fed);
  EXPECT_EQ(fed.error(), FrameError::message_too_large);
  EXPECT_EQ(framer.next(), Frame(std::unexpected(FrameError::message_too_large)));

  // The same, with the crossing byte arriving alone.
  Framer split(kSmall);
  ASSERT_TRUE(split.feed(over.data(), 16));
  auto crossing = split.feed(over.data() + 16, 1);
  ASSERT_FALSE(crossing);
  EXPECT_EQ(crossing.error(), FrameError::message_too_large);
  EXPECT_EQ(split.buffered_bytes(), 0u);  // the offending bytes are dropped
}

TEST(FramerSizeLimit, MessagesBeforeTheOversizedOneAreDelivered) {
  const std::string stream = frames({"{}", "[1]"}) + json_string_of_length(40) + '\0' + "{}"s;
  expect_split_independent(stream, Outcome{{"{}", "[1]"}, FrameError::message_too_large}, kSmall);
}

TEST(FramerSizeLimit, EndlessBytesWithoutNulAreCaughtAtTheLimit) {
  constexpr std::size_t kLimit = 64 * 1024;
  constexpr std::size_t kChunk = 4096;
  Framer framer(FramerLimits{.max_message_bytes = kLimit});
  const std::string opening = R"({"k":")";
  ASSERT_TRUE(framer.feed(opening.data(), opening.size()));
  const std::string chunk(kChunk, 'a');
  std::size_t fed = opening.size();
  for (;;) {
    auto result = framer.feed(chunk.data(), chunk.size());
    fed += chunk.size();
    if (!result) {
      EXPECT_EQ(result.error(), FrameError::message_too_large);
      break;
    }
    ASSERT_LE(fed, kLimit) << "limit crossed without an error";
    EXPECT_FALSE(framer.next().has_value());
    EXPECT_LE(framer.buffered_bytes(), kLimit);
    EXPECT_LE(framer.buffer_capacity(), 4 * (kLimit + kChunk + Framer::kPadding));
  }
  EXPECT_GT(fed, kLimit);
  EXPECT_LT(fed, kLimit + kChunk + 1);  // caught by the chunk that crossed, not later
  EXPECT_TRUE(framer.poisoned());
}

TEST(FramerSizeLimit, HugeReadWithoutNulIsNeverCopied) {
  constexpr std::size_t kLimit = 64 * 1024;
  Framer framer(FramerLimits{.max_message_bytes = kLimit});
  const std::string huge(64 * kLimit, 'a');
  auto result = framer.feed(huge.data(), huge.size());
  ASSERT_FALSE(result);
  EXPECT_EQ(result.error(), FrameError::message_too_large);
  EXPECT_EQ(framer.buffer_capacity(), 0u);
}

// --- depth limit ---------------------------------------------------------------------

constexpr FramerLimits kDepth4{.max_message_bytes = 1 << 20, .max_depth = 4};
constexpr FramerLimits kDepth1{.max_message_bytes = 1 << 20, .max_depth = 1};

TEST(FramerDepthLimit, ExactlyMaxIsAccepted) {
  for (const std::string& message :
       {nested_arrays(4), R"({"a":{"b":{"c":[1]}}})"s, R"([[[[]]],[[[]]],{"x":[{}]}])"s}) {
    expect_split_independent(frames({message}), Outcome{{message}, std::nullopt}, kDepth4);
  }
}

TEST(FramerDepthLimit, MaxPlusOneIsRejected) {
  for (const std::string& message :
       {nested_arrays(5), R"({"a":{"b":{"c":[[1]]}}})"s, R"([[[[]]],[[[{}]]]])"s}) {
    expect_split_independent(frames({"{}", message, "{}"}), Outcome{{"{}"}, FrameError::too_deep},
                             kDepth4);
  }
}

TEST(FramerDepthLimit, RejectedAsSoonAsTheDeepBracketArrives) {
  Framer framer(kDepth4);
  ASSERT_TRUE(framer.feed("[[[[", 4));
  auto result = framer.feed("[", 1);
  ASSERT_FALSE(result);
  EXPECT_EQ(result.error(), FrameError::too_deep);
}

TEST(FramerDepthLimit, DepthRestartsAtEveryMessage) {
  std::vector<std::string> messages(1000, nested_arrays(4));
  // An unclosed message is the codec's problem; it must not lend its depth to the next.
  messages.push_back("[[[[");
  messages.push_back(nested_arrays(4));
  expect_split_independent(frames({"[[[[", nested_arrays(4)}),
                           Outcome{{"[[[[", nested_arrays(4)}, std::nullopt}, kDepth4);
  EXPECT_EQ(feed_whole(frames(messages), kDepth4), (Outcome{messages, std::nullopt}));
}

TEST(FramerDepthLimit, StrayClosersDoNotBuyDepth) {
  EXPECT_EQ(feed_whole(frames({"]]]][[[[[]]]]]"}), kDepth4), (Outcome{{}, FrameError::too_deep}));
}

TEST(FramerDepthLimit, BracketsInsideStringsDoNotCount) {
  const std::vector<std::string> accepted = {
      R"({"a":"[[[[{{{{"})",     R"({"[":"]","{":"}","x":"]]]]"})",
      R"({"a":"\"[[[["})",        // escaped quote does not end the string
      R"({"a":"\\\"[[[["})",      // escaped backslash, then escaped quote
      R"({"a":"\u005b\n[\t{"})",  // other escapes
  };
  for (const auto& message : accepted) {
    expect_split_independent(frames({message}), Outcome{{message}, std::nullopt}, kDepth1);
  }
}

TEST(FramerDepthLimit, EscapedBackslashEndsTheStringBeforeTheQuote) {
  // In "\\" the quote after the escaped backslash closes the string, so the bracket that
  // follows is real.
  for (const std::string& message : {R"({"a":"\\","b":[1]})"s, R"({"a":"\\\\","b":[1]})"s}) {
    expect_split_independent(frames({message}), Outcome{{}, FrameError::too_deep}, kDepth1);
  }
}

TEST(FramerDepthLimit, NulInsideAStringEndsTheFrameAndResetsTheScanner) {
  // A raw NUL always ends a varlink frame. If the string state leaked into the next
  // message, its quotes would pair up differently and its brackets would count.
  const std::vector<std::pair<std::string, std::string>> cases = {
      {R"({"a":"x)", R"("[[[[")"},
      {R"({"a":"[[)", R"("[[[[")"},
      // A dangling backslash must not escape the next message's first backslash.
      {R"({"a":"\)", R"("\"[[[[")"},
  };
  for (const auto& [first, second] : cases) {
    expect_split_independent(frames({first, second}), Outcome{{first, second}, std::nullopt},
                             kDepth1);
  }
}

// --- the block scanner against the byte-by-byte definition ------------------------------

// The scanner as the framing rules define it, one byte at a time: what feed() must agree
// with whatever the reads and whatever the block boundaries of its vectorized scan.
Outcome reference_outcome(std::string_view stream, FramerLimits limits) {
  Outcome out;
  std::string partial;
  std::size_t depth = 0;
  bool in_string = false, after_backslash = false;
  for (char c : stream) {
    if (c == '\0') {
      out.messages.push_back(partial);
      partial.clear();
      depth = 0;
      in_string = after_backslash = false;
      continue;
    }
    partial.push_back(c);
    if (partial.size() > limits.max_message_bytes) {
      out.error = FrameError::message_too_large;
      return out;
    }
    if (in_string) {
      if (after_backslash)
        after_backslash = false;
      else if (c == '\\')
        after_backslash = true;
      else if (c == '"')
        in_string = false;
    } else if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      if (++depth > limits.max_depth) {
        out.error = FrameError::too_deep;
        return out;
      }
    } else if ((c == ']' || c == '}') && depth > 0) {
      --depth;
    }
  }
  return out;
}

TEST(FramerScan, RandomStreamsAgreeWithTheByteByByteRules) {
  // Special bytes, the block scan's false positives ('|', 0x02, which '"' and '\' fold
  // onto) and filler, in runs long enough to cross 16-byte blocks.
  const std::string alphabet = std::string("aaaaaaaa  \"\"\\\\[]{}|") + '\x02' + '\0';
  std::mt19937_64 rng(42);
  for (int round = 0; round < 3000; ++round) {
    const std::size_t len = rng() % 300;
    std::string stream;
    for (std::size_t i = 0; i < len; ++i) {
      // Long filler runs now and then, so whole blocks without a special byte occur.
      if (rng() % 16 == 0) stream += std::string(rng() % 40, 'x');
      stream.push_back(alphabet[rng() % alphabet.size()]);
    }
    FramerLimits limits;
    limits.max_message_bytes = 1 + rng() % 120;
    limits.max_depth = 1 + rng() % 6;
    const Outcome expected = reference_outcome(stream, limits);
    ASSERT_EQ(feed_whole(stream, limits), expected) << "round " << round;
    std::vector<std::size_t> cuts;
    for (std::size_t at = rng() % 40; at < stream.size(); at += 1 + rng() % 40) cuts.push_back(at);
    ASSERT_EQ(feed_cut_at(stream, cuts, limits), expected) << "round " << round;
    ASSERT_EQ(feed_byte_by_byte(stream, limits), expected) << "round " << round;
  }
}

// --- poisoned after an error ---------------------------------------------------------

TEST(FramerPoison, ErrorIsStickyAndLaterBytesAreIgnored) {
  Framer framer(kDepth1);
  const std::string stream = frames({"{}", "[[1]]"});
  auto result = framer.feed(stream.data(), stream.size());
  ASSERT_FALSE(result);
  EXPECT_EQ(result.error(), FrameError::too_deep);
  EXPECT_TRUE(framer.poisoned());

  // A valid message after the error is never framed.
  auto again = framer.feed("{}\0", 3);
  ASSERT_FALSE(again);
  EXPECT_EQ(again.error(), FrameError::too_deep);

  // The message before the offending one is still delivered, then the error, forever.
  auto first = framer.next();
  ASSERT_TRUE(first && *first);
  EXPECT_EQ(**first, "{}");
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(framer.next(), Frame(std::unexpected(FrameError::too_deep)));
  }
  EXPECT_EQ(framer.buffered_bytes(), 0u);
}

// --- memory: compaction and shrinking ------------------------------------------------

TEST(FramerMemory, CapacityStaysBoundedWhileStreaming100kSmallMessages) {
  std::vector<std::string> messages;
  for (int i = 0; i < 100'000; ++i) {
    messages.push_back(R"({"method":"io.budgetd.Agent.RecordUsage","n":)" + std::to_string(i) +
                       "}");
  }
  const std::string stream = frames(messages);
  // Chunk sizes that do and do not line up with message boundaries.
  for (std::size_t chunk : {std::size_t{1}, std::size_t{7}, messages[0].size() + 1,
                            std::size_t{1000}, std::size_t{3000}}) {
    Framer framer;
    Outcome outcome;
    std::size_t max_capacity = 0;
    for (std::size_t begin = 0; begin < stream.size(); begin += chunk) {
      const std::size_t len = std::min(chunk, stream.size() - begin);
      ASSERT_TRUE(framer.feed(stream.data() + begin, len));
      drain(framer, outcome);
      max_capacity = std::max(max_capacity, framer.buffer_capacity());
    }
    EXPECT_EQ(outcome, (Outcome{messages, std::nullopt})) << "chunk " << chunk;
    EXPECT_LE(max_capacity, Framer::kMinCapacity) << "chunk " << chunk;
  }
}

TEST(FramerMemory, CapacityFollowsUnreadBytesForALaggingReader) {
  // The reader pulls one message per feed while two arrive: unread messages accumulate,
  // which is the daemon's back-pressure to handle, but consumed ones never do.
  const std::string message = R"({"method":"io.budgetd.Agent.RecordUsage"})";
  const std::string two = frames({message, message});
  Framer framer;
  std::size_t pulled = 0;
  for (int i = 0; i < 10'000; ++i) {
    ASSERT_TRUE(framer.feed(two.data(), two.size()));
    auto frame = framer.next();
    ASSERT_TRUE(frame && *frame);
    ++pulled;
    EXPECT_LE(framer.buffer_capacity(),
              4 * (framer.buffered_bytes() + two.size() + Framer::kPadding) + Framer::kMinCapacity);
  }
  while (auto frame = framer.next()) {
    ASSERT_TRUE(*frame);
    EXPECT_EQ(**frame, message);
    ++pulled;
  }
  EXPECT_EQ(pulled, 20'000u);
}

TEST(FramerMemory, BufferShrinksAfterALargeMessage) {
  Framer framer;
  const std::string large = json_string_of_length(512 * 1024);
  const std::size_t kChunk = 64 * 1024;
  for (std::size_t begin = 0; begin < large.size(); begin += kChunk) {
    ASSERT_TRUE(framer.feed(large.data() + begin, std::min(kChunk, large.size() - begin)));
  }
  ASSERT_TRUE(framer.feed("\0", 1));
  auto frame = framer.next();
  ASSERT_TRUE(frame && *frame);
  EXPECT_EQ((**frame).size(), large.size());
  EXPECT_GT(framer.buffer_capacity(), Framer::kRetainedCapacity);

  ASSERT_TRUE(framer.feed("{}\0", 3));
  EXPECT_LE(framer.buffer_capacity(), Framer::kRetainedCapacity);
  frame = framer.next();
  ASSERT_TRUE(frame && *frame);
  EXPECT_EQ(**frame, "{}");
}

}  // namespace
}  // namespace budgetd::ipc
