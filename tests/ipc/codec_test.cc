// Decoding a call and reading its parameters: the field index of Params answers as
// simdjson's own lookup does (first of a repeated name, null as absent, many fields).
#include "ipc/codec.h"

#include <gtest/gtest.h>

#include <string>

namespace budgetd::ipc {
namespace {

// A message with the framer's padding after it, as parse_call requires.
struct Padded {
  explicit Padded(std::string_view json) : text(json) {
    text.append(Framer::kPadding, ' ');
    size = json.size();
  }
  std::string_view view() const { return std::string_view(text.data(), size); }
  std::string text;
  std::size_t size;
};

TEST(ParseCall, FieldsInAnyOrder) {
  simdjson::dom::parser parser;
  Padded m(R"({"oneway":true,"parameters":{"a":1},"more":true,"method":"x.y.Z"})");
  auto call = parse_call(parser, m.view());
  ASSERT_TRUE(call.has_value());
  EXPECT_EQ(call->method, "x.y.Z");
  EXPECT_TRUE(call->oneway);
  EXPECT_TRUE(call->more);
  ASSERT_TRUE(call->parameters.has_value());
}

TEST(ParseCall, TheFirstOfARepeatedNameCounts) {
  simdjson::dom::parser parser;
  Padded m(R"({"method":"a.b.C","method":7,"oneway":false,"oneway":true})");
  auto call = parse_call(parser, m.view());
  ASSERT_TRUE(call.has_value());
  EXPECT_EQ(call->method, "a.b.C");
  EXPECT_FALSE(call->oneway);
  Padded bad(R"({"method":7,"method":"a.b.C"})");
  EXPECT_EQ(parse_call(parser, bad.view()).error(), CallError::not_a_call);
}

TEST(ParseCall, NotACall) {
  simdjson::dom::parser parser;
  for (std::string_view json : {R"([1])", R"({"parameters":{}})", R"("x")"}) {
    Padded m(json);
    EXPECT_EQ(parse_call(parser, m.view()).error(), CallError::not_a_call) << json;
  }
  Padded garbage("{nope");
  EXPECT_EQ(parse_call(parser, garbage.view()).error(), CallError::invalid_json);
}

Params params_of(simdjson::dom::parser& parser, const Padded& m) {
  auto call = parse_call(parser, m.view());
  EXPECT_TRUE(call.has_value());
  return Params(call->parameters);
}

TEST(Params, PresentAbsentNullAndRepeatedNames) {
  simdjson::dom::parser parser;
  Padded m(R"({"method":"a.b.C","parameters":{"n":5,"s":"x","z":null,"n":6,"ns":1}})");
  Params p = params_of(parser, m);
  EXPECT_EQ(p.u64("n"), 5u);  // the first "n"
  EXPECT_EQ(p.str("s"), "x");
  EXPECT_FALSE(p.has("z"));  // null is absent
  EXPECT_FALSE(p.has("m"));
  EXPECT_FALSE(p.has(""));
  EXPECT_EQ(p.u64_or("absent", 9), 9u);
  EXPECT_EQ(p.u64("ns"), 1u);
  EXPECT_TRUE(p.ok());
  (void)p.u64("s");
  EXPECT_EQ(p.bad(), "s");
}

TEST(Params, ManyFieldsAreAllFound) {
  simdjson::dom::parser parser;
  std::string json = R"({"method":"a.b.C","parameters":{)";
  for (int i = 0; i < 40; ++i) json += (i ? "," : "") + std::string("\"f") + std::to_string(i) + "\":" + std::to_string(i);
  json += "}}";
  Padded m(json);
  Params p = params_of(parser, m);
  for (int i = 0; i < 40; ++i) EXPECT_EQ(p.u64("f" + std::to_string(i)), static_cast<uint64_t>(i)) << i;
  EXPECT_FALSE(p.has("f40"));
  EXPECT_TRUE(p.ok());
}

TEST(Params, NestedObjectsHaveTheirOwnIndex) {
  simdjson::dom::parser parser;
  Padded m(R"({"method":"a.b.C","parameters":{"q":{"a":1,"b":"2"},"a":3}})");
  Params p = params_of(parser, m);
  Params q = p.object("q");
  EXPECT_EQ(q.u64("a"), 1u);
  EXPECT_EQ(q.str("b"), "2");
  EXPECT_EQ(p.u64("a"), 3u);
  EXPECT_TRUE(q.ok() && p.ok());
}

TEST(Params, EscapedKeysMatchTheirText) {
  simdjson::dom::parser parser;
  Padded m(R"({"method":"a.b.C","parameters":{"pro\u0063ess":"p"}})");
  Params p = params_of(parser, m);
  EXPECT_EQ(p.str("process"), "p");
}

}  // namespace
}  // namespace budgetd::ipc
