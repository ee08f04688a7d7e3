// The varlink service layer through Service::handle: org.varlink.service, the standard
// errors, call flags (oneway, more), pipelining, and messages that close the connection.
#include "ipc/service.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "tests/ipc/test_support.h"

namespace budgetd::ipc::testsupport {
namespace {

// The source tree's ipc/ directory, found from this file's path.
std::filesystem::path source_ipc_dir() {
  return std::filesystem::path(__FILE__).parent_path().parent_path().parent_path() / "ipc";
}

std::string read_text(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

bool contains(const json& array, const std::string& value) {
  return std::find(array.begin(), array.end(), json(value)) != array.end();
}

TEST(ServiceTest, GetInfoDescribesTheService) {
  Harness h;
  json r = h.invoke("org.varlink.service.GetInfo");
  ASSERT_EQ(error_of(r), "") << r;
  json p = params_of(r);
  EXPECT_EQ(p["vendor"], "budgetd");
  EXPECT_EQ(p["product"], "budgetd");
  EXPECT_EQ(p["version"], "0.1.0-test");
  ASSERT_TRUE(p["url"].is_string());
  EXPECT_FALSE(p["url"].get<std::string>().empty());
  ASSERT_TRUE(p["interfaces"].is_array());
  EXPECT_TRUE(contains(p["interfaces"], "org.varlink.service")) << p["interfaces"];
  EXPECT_TRUE(contains(p["interfaces"], "io.budgetd.Agent")) << p["interfaces"];
  EXPECT_FALSE(r.contains("continues"));
}

TEST(ServiceTest, GetInfoAcceptsAbsentNullAndEmptyParameters) {
  Harness h;
  for (const char* msg : {R"({"method":"org.varlink.service.GetInfo"})",
                          R"({"method":"org.varlink.service.GetInfo","parameters":null})",
                          R"({"method":"org.varlink.service.GetInfo","parameters":{}})"}) {
    auto replies = h.call(msg);
    ASSERT_EQ(replies.size(), 1u) << msg;
    EXPECT_EQ(error_of(replies[0]), "") << msg << " -> " << replies[0];
    EXPECT_EQ(params_of(replies[0])["product"], "budgetd") << msg;
  }
}

TEST(ServiceTest, AgentMethodWithNothingRequiredAcceptsAbsentNullAndEmptyParameters) {
  Harness h;
  for (const char* msg : {R"({"method":"io.budgetd.Agent.CheckRateLimit"})",
                          R"({"method":"io.budgetd.Agent.CheckRateLimit","parameters":null})",
                          R"({"method":"io.budgetd.Agent.CheckRateLimit","parameters":{}})"}) {
    auto replies = h.call(msg, kAgent);
    ASSERT_EQ(replies.size(), 1u) << msg;
    EXPECT_EQ(error_of(replies[0]), "") << msg << " -> " << replies[0];
    EXPECT_EQ(params_of(replies[0])["exceeded"], false) << msg;
  }
}

TEST(ServiceTest, GetInterfaceDescriptionServesExactlyTheInterfaceFiles) {
  Harness h;
  json interfaces = params_of(h.invoke("org.varlink.service.GetInfo"))["interfaces"];
  ASSERT_TRUE(interfaces.is_array());
  ASSERT_GE(interfaces.size(), 2u);
  int files_compared = 0;
  for (const auto& name : interfaces) {
    json r = h.invoke("org.varlink.service.GetInterfaceDescription", {{"interface", name}});
    ASSERT_EQ(error_of(r), "") << name << ": " << r;
    ASSERT_TRUE(params_of(r)["description"].is_string()) << r;
    const std::string description = params_of(r)["description"];
    if (name == "org.varlink.service") {
      EXPECT_EQ(description, std::string(kVarlinkServiceInterface));
      continue;
    }
    const auto path = source_ipc_dir() / (name.get<std::string>() + ".varlink");
    ASSERT_TRUE(std::filesystem::exists(path)) << "interface " << name << " has no file " << path;
    EXPECT_EQ(description, read_text(path))
        << "the served description of " << name << " differs from " << path;
    ++files_compared;
  }
  EXPECT_GE(files_compared, 1);  // at least io.budgetd.Agent
}

TEST(ServiceTest, GetInterfaceDescriptionOfAnUnknownInterface) {
  Harness h;
  json r =
      h.invoke("org.varlink.service.GetInterfaceDescription", {{"interface", "com.example.Nope"}});
  EXPECT_EQ(error_of(r), "org.varlink.service.InterfaceNotFound");
  EXPECT_EQ(params_of(r), json({{"interface", "com.example.Nope"}}));
}

TEST(ServiceTest, MethodOfAnUnknownInterface) {
  Harness h;
  json r = h.invoke("com.example.Nope.Frobnicate");
  EXPECT_EQ(error_of(r), "org.varlink.service.InterfaceNotFound");
  EXPECT_EQ(params_of(r), json({{"interface", "com.example.Nope"}}));
}

TEST(ServiceTest, UnknownMethodOnAKnownInterface) {
  Harness h;
  json r = h.invoke("io.budgetd.Agent.Frobnicate", {{"process", "1"}});
  EXPECT_EQ(error_of(r), "org.varlink.service.MethodNotFound");
  EXPECT_EQ(params_of(r), json({{"method", "io.budgetd.Agent.Frobnicate"}}));

  r = h.invoke("org.varlink.service.Frobnicate");
  EXPECT_EQ(error_of(r), "org.varlink.service.MethodNotFound");
  EXPECT_EQ(params_of(r), json({{"method", "org.varlink.service.Frobnicate"}}));
}

TEST(ServiceTest, WrongParameterTypeIsInvalidParameter) {
  Harness h;
  json r = h.invoke("org.varlink.service.GetInterfaceDescription", {{"interface", 5}});
  EXPECT_EQ(error_of(r), "org.varlink.service.InvalidParameter");
  EXPECT_EQ(params_of(r), json({{"parameter", "interface"}}));

  // A bad parameter changes nothing, even when others are fine.
  r = h.agent("RecordUsage", {{"process", "env-1"}, {"llm_calls", "many"}});
  EXPECT_EQ(error_of(r), "org.varlink.service.InvalidParameter");
  EXPECT_EQ(params_of(r), json({{"parameter", "llm_calls"}}));
  EXPECT_EQ(params_of(h.agent("IsTracked", {{"process", "env-1"}}))["tracked"], false);

  // Negative and fractional counts are wrong types for an int.
  r = h.agent("RecordUsage", {{"process", "env-1"}, {"tool_calls", -1}});
  EXPECT_EQ(params_of(r), json({{"parameter", "tool_calls"}}));
  r = h.agent("RecordUsage", {{"process", "env-1"}, {"tokens_in", 1.5}});
  EXPECT_EQ(params_of(r), json({{"parameter", "tokens_in"}}));
  // Money is a decimal string, never a float.
  r = h.agent("RecordUsage", {{"process", "env-1"}, {"cost", 0.25}});
  EXPECT_EQ(params_of(r), json({{"parameter", "cost"}}));
  EXPECT_EQ(params_of(h.agent("IsTracked", {{"process", "env-1"}}))["tracked"], false);
}

TEST(ServiceTest, NonObjectParametersAreInvalid) {
  Harness h;
  auto replies = h.call(R"({"method":"io.budgetd.Agent.IsTracked","parameters":[1,2]})");
  ASSERT_EQ(replies.size(), 1u);
  EXPECT_EQ(error_of(replies[0]), "org.varlink.service.InvalidParameter");
  EXPECT_EQ(params_of(replies[0]), json({{"parameter", "parameters"}}));
}

TEST(ServiceTest, MissingRequiredParameterIsInvalidParameter) {
  Harness h;
  json r = h.invoke("org.varlink.service.GetInterfaceDescription");
  EXPECT_EQ(error_of(r), "org.varlink.service.InvalidParameter");
  EXPECT_EQ(params_of(r), json({{"parameter", "interface"}}));

  r = h.agent("Release");
  EXPECT_EQ(error_of(r), "org.varlink.service.InvalidParameter");
  EXPECT_EQ(params_of(r), json({{"parameter", "process"}}));

  // null is "absent", so it is missing too.
  r = h.agent("GetUsage", {{"process", nullptr}});
  EXPECT_EQ(params_of(r), json({{"parameter", "process"}}));

  r = h.agent("Commit", json::object());
  EXPECT_EQ(error_of(r), "org.varlink.service.InvalidParameter");
  EXPECT_EQ(params_of(r), json({{"parameter", "reservation_id"}}));
}

TEST(ServiceTest, OnewayGetsNoReplyYetTakesEffect) {
  Harness h;
  auto replies = h.call(
      R"({"method":"io.budgetd.Agent.RecordUsage","oneway":true,"parameters":{"process":"env-1","llm_calls":2}})");
  EXPECT_EQ(h.outcome, Service::Outcome::replied);
  EXPECT_TRUE(replies.empty());
  EXPECT_TRUE(h.out.empty()) << "oneway produced " << h.out.size() << " bytes";

  json usage = params_of(h.agent("GetUsage", {{"process", "env-1"}}))["usage"];
  EXPECT_EQ(usage["llm_calls"], 2);
}

TEST(ServiceTest, OnewayErrorsAreSilentToo) {
  Harness h;
  auto replies = h.call(
      R"({"method":"io.budgetd.Agent.GetUsage","oneway":true,"parameters":{"process":"nobody"}})");
  EXPECT_TRUE(replies.empty());
  EXPECT_TRUE(h.out.empty());
  replies = h.call(R"({"method":"io.budgetd.Agent.Nope","oneway":true})");
  EXPECT_TRUE(h.out.empty());
}

TEST(ServiceTest, PipelinedCallsAreAnsweredInOrder) {
  Harness h;
  std::string stream;
  stream += R"({"method":"io.budgetd.Agent.Allocate","parameters":{"process":"env-1"}})";
  stream.push_back('\0');
  stream +=
      R"({"method":"io.budgetd.Agent.RecordUsage","parameters":{"process":"env-1","tool_calls":3}})";
  stream.push_back('\0');
  stream += R"({"method":"io.budgetd.Agent.GetUsage","parameters":{"process":"env-1"}})";
  stream.push_back('\0');
  auto replies = h.call_stream(stream);
  EXPECT_EQ(h.outcome, Service::Outcome::replied);
  ASSERT_EQ(replies.size(), 3u) << h.out;
  EXPECT_EQ(params_of(replies[0])["allocated"], true);
  EXPECT_EQ(params_of(replies[1])["usage"]["tool_calls"], 3);
  EXPECT_EQ(params_of(replies[2])["usage"]["tool_calls"], 3);
}

TEST(ServiceTest, PipelinedOnewayCallsStayInOrder) {
  Harness h;
  std::string stream;
  for (int i = 0; i < 3; ++i) {
    stream +=
        R"({"method":"io.budgetd.Agent.RecordUsage","oneway":true,"parameters":{"process":"env-1","tool_calls":1}})";
    stream.push_back('\0');
  }
  stream += R"({"method":"io.budgetd.Agent.GetUsage","parameters":{"process":"env-1"}})";
  stream.push_back('\0');
  auto replies = h.call_stream(stream);
  ASSERT_EQ(replies.size(), 1u) << h.out;
  EXPECT_EQ(params_of(replies[0])["usage"]["tool_calls"], 3);
}

TEST(ServiceTest, WatchWithoutMoreIsExpectedMore) {
  Harness h;
  auto replies = h.call(R"({"method":"io.budgetd.Agent.Watch","parameters":{}})", kAgent);
  ASSERT_EQ(replies.size(), 1u);
  EXPECT_EQ(error_of(replies[0]), "org.varlink.service.ExpectedMore");
  EXPECT_FALSE(replies[0].contains("continues"));
  EXPECT_TRUE(h.hooks.watches.empty());
}

TEST(ServiceTest, InvalidJsonCloses) {
  Harness h;
  for (const char* msg : {"", "{", "not json", R"({"method":"io.budgetd.Agent.IsTracked",})",
                          "{\"method\":\"a\xff\"}"}) {
    auto replies = h.call(msg);
    EXPECT_EQ(h.outcome, Service::Outcome::close) << msg;
    EXPECT_TRUE(h.out.empty()) << msg;
    EXPECT_TRUE(replies.empty());
  }
}

TEST(ServiceTest, NotACallCloses) {
  Harness h;
  for (const char* msg :
       {R"([{"method":"org.varlink.service.GetInfo"}])", R"("org.varlink.service.GetInfo")", "42",
        "null", R"({"parameters":{}})", R"({"method":5})", R"({"method":null})"}) {
    auto replies = h.call(msg);
    EXPECT_EQ(h.outcome, Service::Outcome::close) << msg;
    EXPECT_TRUE(h.out.empty()) << msg;
    EXPECT_TRUE(replies.empty());
  }
}

TEST(ServiceTest, AnInvalidMessageInAPipelineClosesAfterTheEarlierReplies) {
  Harness h;
  std::string stream;
  stream += R"({"method":"org.varlink.service.GetInfo"})";
  stream.push_back('\0');
  stream += "garbage";
  stream.push_back('\0');
  stream += R"({"method":"org.varlink.service.GetInfo"})";
  stream.push_back('\0');
  auto replies = h.call_stream(stream);
  EXPECT_EQ(h.outcome, Service::Outcome::close);
  ASSERT_EQ(replies.size(), 1u);
  EXPECT_EQ(params_of(replies[0])["product"], "budgetd");
}

TEST(ServiceTest, CountsCalls) {
  Harness h;
  const uint64_t before = h.service.calls();
  h.invoke("org.varlink.service.GetInfo");
  h.agent("IsTracked", {{"process", "1"}});
  EXPECT_EQ(h.service.calls(), before + 2);
}

}  // namespace
}  // namespace budgetd::ipc::testsupport
