// Connections: peer credentials and operators, pipelined replies written per batch,
// back-pressure on a client that does not read, malformed input closing the connection,
// the durability barrier (held replies), and destruction deferred to the close callback (the loop closes with
// uv_loop_close() == 0). No sleeps: the loop is driven until a condition, with a deadline.
#include "daemon/connection.h"

#include <fcntl.h>
#include <grp.h>
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "daemon/procfs.h"
#include "ipc/service.h"
#include "lib/engine.h"

namespace budgetd::daemon {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

// ---- Peer credentials -----------------------------------------------------------------

TEST(PeerCredentials, SocketPairGivesOurOwnIds) {
  int fds[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds), 0);
  auto c = read_peer_credentials(fds[0]);
  ASSERT_TRUE(c.has_value());
  EXPECT_EQ(c->uid, getuid());
  EXPECT_EQ(c->gid, getgid());
  EXPECT_EQ(c->pid, getpid());
  std::vector<gid_t> mine(static_cast<std::size_t>(getgroups(0, nullptr)));
  getgroups(static_cast<int>(mine.size()), mine.data());
  std::vector<uint32_t> expected(mine.begin(), mine.end());
  std::sort(expected.begin(), expected.end());
  std::vector<uint32_t> got = c->groups;
  std::sort(got.begin(), got.end());
  EXPECT_EQ(got, expected);
  close(fds[0]);
  close(fds[1]);
}

TEST(PeerCredentials, NotASocketIsAnError) {
  int fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
  auto c = read_peer_credentials(fd);
  EXPECT_FALSE(c.has_value());
  close(fd);
}

TEST(IsOperator, RootOrTheOperatorGroup) {
  PeerCredentials root{0, 0, 1, {}};
  EXPECT_TRUE(is_operator(root, std::nullopt));
  PeerCredentials agent{1000, 1000, 42, {27, 100}};
  EXPECT_FALSE(is_operator(agent, std::nullopt));
  EXPECT_FALSE(is_operator(agent, 4242u));
  EXPECT_TRUE(is_operator(agent, 1000u));  // primary group
  EXPECT_TRUE(is_operator(agent, 100u));   // supplementary group
}

// A client under another uid: fork, drop to nobody (with an optional supplementary group),
// connect. Needs root to change uid.
struct ForeignPeer {
  PeerCredentials creds;
  bool ok = false;
};

ForeignPeer connect_as(uid_t uid, gid_t gid, std::vector<gid_t> groups) {
  ForeignPeer out;
  std::string tmpl = (fs::temp_directory_path() / "budgetd-peer-XXXXXX").string();
  std::string dir = mkdtemp(tmpl.data());
  chmod(dir.c_str(), 0777);
  std::string path = dir + "/sock";
  int lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  std::snprintf(a.sun_path, sizeof a.sun_path, "%s", path.c_str());
  if (bind(lfd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || listen(lfd, 1) != 0) return out;
  chmod(path.c_str(), 0777);
  pid_t child = fork();
  if (child == 0) {
    if (setgroups(groups.size(), groups.data()) != 0 || setgid(gid) != 0 || setuid(uid) != 0)
      _exit(2);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) _exit(3);
    char b;
    (void)read(fd, &b, 1);  // until the parent closes
    _exit(0);
  }
  int cfd = accept4(lfd, nullptr, nullptr, SOCK_CLOEXEC);
  if (cfd >= 0) {
    auto c = read_peer_credentials(cfd);
    if (c) {
      out.creds = *c;
      out.ok = true;
    }
    close(cfd);
  }
  int status = 0;
  waitpid(child, &status, 0);
  close(lfd);
  fs::remove_all(dir);
  return out;
}

TEST(PeerCredentials, AnotherUidIsSeenAsItIs) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root to run a client under another uid";
  ForeignPeer p = connect_as(65534, 65534, {4242});
  ASSERT_TRUE(p.ok);
  EXPECT_EQ(p.creds.uid, 65534u);
  EXPECT_EQ(p.creds.gid, 65534u);
  EXPECT_EQ(p.creds.groups, std::vector<uint32_t>{4242});
  EXPECT_FALSE(is_operator(p.creds, std::nullopt));
  EXPECT_FALSE(is_operator(p.creds, 1234u));
  EXPECT_TRUE(is_operator(p.creds, 4242u));  // a member of the operator group
}

TEST(Procfs, ParsePidAcceptsOnlyPlainPositiveDecimals) {
  EXPECT_EQ(parse_pid("4242"), 4242);
  EXPECT_EQ(parse_pid("2147483647"), 2147483647);
  EXPECT_FALSE(parse_pid("2147483648"));
  EXPECT_FALSE(parse_pid("0"));
  EXPECT_FALSE(parse_pid("-1"));
  EXPECT_FALSE(parse_pid("+1"));
  EXPECT_FALSE(parse_pid("env-123"));
  EXPECT_FALSE(parse_pid(""));
  EXPECT_FALSE(parse_pid("12 "));
}

TEST(Procfs, ParentChain) {
  EXPECT_EQ(parent_pid(getpid()), getppid());
  EXPECT_TRUE(is_descendant(getpid(), getpid()));
  EXPECT_TRUE(is_descendant(getpid(), getppid()));
  EXPECT_TRUE(is_descendant(getpid(), 1));
  EXPECT_FALSE(is_descendant(getppid(), getpid()));
  EXPECT_FALSE(is_descendant(0, getpid()));
}

TEST(Procfs, GroupsOfALiveProcess) {
  auto g = process_groups(getpid());
  ASSERT_TRUE(g.has_value());
  EXPECT_EQ(static_cast<int>(g->size()), getgroups(0, nullptr));
}

// ---- Connection on a uv loop ----------------------------------------------------------

class NullHooks : public ipc::Hooks {
 public:
  Result<void> reload() override { return {}; }
  Result<void> pause(std::string_view, bool) override { return {}; }
  void watch(const ipc::WatchFilter&) override {}
  void write_stats(ipc::JsonWriter&) override {}
  bool is_descendant(int32_t, int32_t) override { return false; }
  Result<void> track(std::string_view) override { return {}; }
};

// The Manager's part, reduced: the real ipc::Service (org.varlink.service is built in).
class TestHost : public ConnectionHost {
 public:
  TestHost() : engine(clock), service(ipc::ServiceInfo{}) {}

  ipc::Service::Outcome dispatch(Connection& c, std::string_view message,
                                 std::string& out) override {
    max_pending = std::max(max_pending, c.pending_reply_bytes());
    ++dispatched;
    auto outcome = service.handle(message, engine, c.peer(), hooks, out);
    // After the handler wrote its reply, as a store asks once the change is made.
    if (auto it = hold_at.find(dispatched); it != hold_at.end()) c.hold_output_until(it->second);
    return outcome;
  }
  void after_batch(Connection&) override { ++batches; }
  void closed(Connection& c) override {
    EXPECT_EQ(&c, conn.get());
    ++closed_count;
    conn.reset();  // freed here, in the close callback, never before
  }

  FakeClock clock;
  Engine engine;
  ipc::Service service;
  NullHooks hooks;
  std::unique_ptr<Connection> conn;
  std::map<int, uint64_t> hold_at;  // the n-th dispatched message holds until this seq
  std::size_t max_pending = 0;
  int dispatched = 0;
  int batches = 0;
  int closed_count = 0;
};

const std::string kGetInfo = std::string(R"({"method":"org.varlink.service.GetInfo"})") + '\0';
const std::string kDescribe =
    std::string(
        R"({"method":"org.varlink.service.GetInterfaceDescription","parameters":{"interface":"org.varlink.service"}})") +
    '\0';

class ConnectionTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_EQ(uv_loop_init(&loop_), 0);
    int fds[2];
    ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds), 0);
    client_ = fds[1];
    fcntl(client_, F_SETFL, O_NONBLOCK);
    server_fd_ = fds[0];
  }
  void TearDown() override {
    if (host_.conn) host_.conn->close();
    uv_run(&loop_, UV_RUN_DEFAULT);
    if (client_ >= 0) close(client_);
    EXPECT_EQ(uv_loop_close(&loop_), 0);
  }

  void open(ConnectionLimits limits = {}) {
    host_.conn = std::make_unique<Connection>(&loop_, host_, limits, 1);
    auto r = host_.conn->open(server_fd_);
    ASSERT_TRUE(r.has_value()) << r.error();
    host_.conn->start();
  }

  // Sends everything, driving the loop while the socket is full.
  void send(const std::string& bytes) {
    std::size_t off = 0;
    auto deadline = Clock::now() + std::chrono::seconds(10);
    while (off < bytes.size()) {
      ssize_t n = write(client_, bytes.data() + off, bytes.size() - off);
      if (n > 0)
        off += static_cast<std::size_t>(n);
      else {
        ASSERT_TRUE(errno == EAGAIN) << strerror(errno);
        ASSERT_LT(Clock::now(), deadline);
        uv_run(&loop_, UV_RUN_NOWAIT);
      }
    }
  }

  // Reads what is there; false once the daemon closed the connection.
  bool receive() {
    char buf[65536];
    for (;;) {
      ssize_t n = read(client_, buf, sizeof buf);
      if (n > 0) {
        received_.append(buf, static_cast<std::size_t>(n));
        continue;
      }
      if (n == 0) return false;
      return true;  // EAGAIN
    }
  }

  std::vector<std::string> replies() const {
    std::vector<std::string> out;
    std::size_t pos = 0, nul;
    while ((nul = received_.find('\0', pos)) != std::string::npos) {
      out.push_back(received_.substr(pos, nul - pos));
      pos = nul + 1;
    }
    return out;
  }

  template <class Pred>
  bool run_until(Pred done, bool read_replies = true) {
    auto deadline = Clock::now() + std::chrono::seconds(10);
    while (!done()) {
      if (Clock::now() > deadline) return false;
      uv_run(&loop_, UV_RUN_NOWAIT);
      if (read_replies) eof_ = !receive() || eof_;
    }
    return true;
  }

  uv_loop_t loop_{};
  TestHost host_;
  int server_fd_ = -1;
  int client_ = -1;
  std::string received_;
  bool eof_ = false;
};

TEST_F(ConnectionTest, PipelinedCallsAreAnsweredInOrderWithOneWritePerBatch) {
  open();
  std::string batch;
  for (int i = 0; i < 10; ++i) batch += (i % 2 == 0) ? kGetInfo : kDescribe;
  send(batch);
  ASSERT_TRUE(run_until([&] { return replies().size() == 10; }));
  auto r = replies();
  for (int i = 0; i < 10; ++i) {
    if (i % 2 == 0)
      EXPECT_NE(r[i].find("\"vendor\""), std::string::npos) << i;
    else
      EXPECT_NE(r[i].find("\"description\""), std::string::npos) << i;
  }
  // Ten calls in one read: one batch, one uv_write (not ten).
  EXPECT_EQ(host_.batches, 1);
  EXPECT_EQ(host_.conn->writes(), 1u);
  EXPECT_EQ(host_.conn->peer().pid, getpid());
  EXPECT_EQ(host_.conn->peer().uid, getuid());
}

TEST_F(ConnectionTest, OnewayCallsGetNoReplyButKeepTheirPlace) {
  open();
  send(std::string(R"({"method":"org.varlink.service.GetInfo","oneway":true})") + '\0' + kDescribe);
  ASSERT_TRUE(run_until([&] { return replies().size() == 1; }));
  EXPECT_EQ(host_.dispatched, 2);
  EXPECT_NE(replies()[0].find("\"description\""), std::string::npos);
}

TEST_F(ConnectionTest, AClientThatDoesNotReadIsPausedInsteadOfGrowingMemory) {
  ConnectionLimits limits;
  limits.max_pending_reply_bytes = 16 * 1024;
  open(limits);
  constexpr int kCalls = 3000;  // about 4 MB of replies
  std::string calls;
  for (int i = 0; i < kCalls; ++i) calls += (i % 2 == 0) ? kGetInfo : kDescribe;
  // Write without reading until the connection stops reading from us.
  std::size_t off = 0;
  ASSERT_TRUE(run_until(
      [&] {
        if (off < calls.size()) {
          ssize_t n = write(client_, calls.data() + off, calls.size() - off);
          if (n > 0) off += static_cast<std::size_t>(n);
        }
        return host_.conn->paused() && host_.dispatched > 0;
      },
      /*read_replies=*/false));
  // Stays paused while we do not read.
  for (int i = 0; i < 100; ++i) uv_run(&loop_, UV_RUN_NOWAIT);
  EXPECT_TRUE(host_.conn->paused());
  EXPECT_LT(host_.dispatched, kCalls);
  // The backlog never passed the bound by more than one reply (~1.5 KiB).
  EXPECT_LE(host_.max_pending, limits.max_pending_reply_bytes + 2048);
  EXPECT_LE(host_.conn->pending_reply_bytes(), limits.max_pending_reply_bytes + 2048);

  // Now read: every call is answered, in order.
  ASSERT_TRUE(run_until([&] {
    if (off < calls.size()) {
      ssize_t n = write(client_, calls.data() + off, calls.size() - off);
      if (n > 0) off += static_cast<std::size_t>(n);
    }
    return replies().size() == static_cast<std::size_t>(kCalls);
  }));
  auto r = replies();
  for (int i = 0; i < kCalls; ++i) {
    const char* want = (i % 2 == 0) ? "\"vendor\"" : "\"description\"";
    ASSERT_NE(r[i].find(want), std::string::npos) << "reply " << i;
  }
  EXPECT_FALSE(host_.conn->paused());
  EXPECT_LE(host_.max_pending, limits.max_pending_reply_bytes + 2048);
}

TEST_F(ConnectionTest, InvalidJsonClosesTheConnectionAfterEarlierReplies) {
  open();
  send(kGetInfo + std::string("{not json") + '\0' + kGetInfo);
  ASSERT_TRUE(run_until([&] { return eof_ && host_.closed_count == 1; }));
  EXPECT_EQ(replies().size(), 1u);  // the call before the garbage was answered
  EXPECT_EQ(host_.conn, nullptr);   // freed in the close callback
}

TEST_F(ConnectionTest, AnOversizedMessageClosesTheConnection) {
  ConnectionLimits limits;
  limits.framer.max_message_bytes = 1024;
  open(limits);
  send(R"({"method":"org.varlink.service.GetInfo","parameters":{"x":")" + std::string(4096, 'a'));
  ASSERT_TRUE(run_until([&] { return eof_ && host_.closed_count == 1; }));
  EXPECT_EQ(host_.dispatched, 0);
}

TEST_F(ConnectionTest, TooDeepJsonClosesTheConnection) {
  ConnectionLimits limits;
  limits.framer.max_depth = 8;
  open(limits);
  send(std::string(100, '[') + '\0');
  ASSERT_TRUE(run_until([&] { return eof_ && host_.closed_count == 1; }));
  EXPECT_EQ(host_.dispatched, 0);
}

TEST_F(ConnectionTest, HalfCloseStillGetsEveryReplyThenEof) {
  open();
  std::string batch;
  for (int i = 0; i < 50; ++i) batch += kDescribe;
  send(batch);
  ASSERT_EQ(shutdown(client_, SHUT_WR), 0);
  ASSERT_TRUE(run_until([&] { return eof_ && host_.closed_count == 1; }));
  EXPECT_EQ(replies().size(), 50u);
}

TEST_F(ConnectionTest, PeerHangupFreesTheConnectionOnlyInTheCloseCallback) {
  open();
  send(kGetInfo);
  ASSERT_TRUE(run_until([&] { return replies().size() == 1; }));
  close(client_);
  client_ = -1;
  ASSERT_TRUE(run_until([&] { return host_.closed_count == 1; }, false));
  EXPECT_EQ(host_.conn, nullptr);
}

TEST_F(ConnectionTest, PushedFramesAreWrittenAndASlowWatcherIsReported) {
  ConnectionLimits limits;
  limits.max_pending_reply_bytes = 4096;
  open(limits);
  std::string frame = std::string(R"({"continues":true,"parameters":{}})") + '\0';
  ASSERT_TRUE(host_.conn->push(frame));
  host_.conn->flush();
  ASSERT_TRUE(run_until([&] { return replies().size() == 1; }));
  // Not reading: pushes past twice the bound report a watcher to drop.
  std::string big(1000, 'x');
  big += '\0';
  bool accepted = true;
  for (int i = 0; i < 10000 && accepted; ++i) {
    accepted = host_.conn->push(big);
    host_.conn->flush();
  }
  EXPECT_FALSE(accepted);
}


// ---- The durability barrier -----------------------------------------------------------

// The replies of kGetInfo carry the vendor, those of kDescribe the description: a reply's
// kind tells which call it answers, so the order is checked.
std::string alternating(int n) {
  std::string s;
  for (int i = 0; i < n; ++i) s += (i % 2 == 0) ? kGetInfo : kDescribe;
  return s;
}

void expect_alternating(const std::vector<std::string>& r) {
  for (std::size_t i = 0; i < r.size(); ++i)
    EXPECT_NE(r[i].find(i % 2 == 0 ? "\"vendor\"" : "\"description\""), std::string::npos)
        << "reply " << i << " out of order";
}

TEST_F(ConnectionTest, AHeldReplyAndEverythingAfterItWaitForTheirSeq) {
  host_.hold_at[2] = 5;
  open();
  send(alternating(3));
  ASSERT_TRUE(run_until([&] { return host_.dispatched == 3 && replies().size() == 1; }));
  for (int i = 0; i < 50; ++i) uv_run(&loop_, UV_RUN_NOWAIT);
  receive();
  EXPECT_EQ(replies().size(), 1u);  // the first reply was before the hold
  EXPECT_GT(host_.conn->held_bytes(), 0u);
  EXPECT_EQ(host_.conn->pending_reply_bytes(), host_.conn->held_bytes());

  host_.conn->release_output(4);  // not durable yet
  for (int i = 0; i < 50; ++i) uv_run(&loop_, UV_RUN_NOWAIT);
  receive();
  EXPECT_EQ(replies().size(), 1u);

  host_.conn->release_output(5);
  ASSERT_TRUE(run_until([&] { return replies().size() == 3; }));
  expect_alternating(replies());
  EXPECT_EQ(host_.conn->held_bytes(), 0u);
  EXPECT_EQ(host_.conn->pending_reply_bytes(), 0u);
}

TEST_F(ConnectionTest, StackedHoldsReleaseRegionByRegionInOrder) {
  host_.hold_at[2] = 10;
  host_.hold_at[3] = 20;
  open();
  send(alternating(4));
  ASSERT_TRUE(run_until([&] { return host_.dispatched == 4 && replies().size() == 1; }));

  host_.conn->release_output(10);  // frees the second reply; the third waits for 20
  ASSERT_TRUE(run_until([&] { return replies().size() == 2; }));
  for (int i = 0; i < 50; ++i) uv_run(&loop_, UV_RUN_NOWAIT);
  receive();
  EXPECT_EQ(replies().size(), 2u);

  host_.conn->release_output(25);
  ASSERT_TRUE(run_until([&] { return replies().size() == 4; }));
  expect_alternating(replies());
}

TEST_F(ConnectionTest, ALaterHoldWithASmallerSeqStillWaitsForTheEarlierOne) {
  host_.hold_at[2] = 20;
  host_.hold_at[3] = 10;
  open();
  send(alternating(4));
  ASSERT_TRUE(run_until([&] { return host_.dispatched == 4 && replies().size() == 1; }));

  host_.conn->release_output(10);  // the third reply is durable, but comes after the second
  for (int i = 0; i < 50; ++i) uv_run(&loop_, UV_RUN_NOWAIT);
  receive();
  EXPECT_EQ(replies().size(), 1u);

  host_.conn->release_output(20);
  ASSERT_TRUE(run_until([&] { return replies().size() == 4; }));
  expect_alternating(replies());
}

TEST_F(ConnectionTest, ASeqAlreadyReleasedIsNoHold) {
  open();
  host_.conn->release_output(7);
  host_.hold_at[1] = 7;
  host_.hold_at[2] = 3;
  send(alternating(2));
  ASSERT_TRUE(run_until([&] { return replies().size() == 2; }));
  EXPECT_EQ(host_.conn->held_bytes(), 0u);
}

TEST_F(ConnectionTest, PushedFramesAfterAHoldWaitToo) {
  open();
  host_.conn->hold_output_until(3);
  ASSERT_TRUE(host_.conn->push(std::string(R"({"continues":true,"parameters":{}})") + '\0'));
  host_.conn->flush();
  for (int i = 0; i < 50; ++i) uv_run(&loop_, UV_RUN_NOWAIT);
  receive();
  EXPECT_TRUE(replies().empty());
  host_.conn->release_output(3);
  ASSERT_TRUE(run_until([&] { return replies().size() == 1; }));
}

TEST_F(ConnectionTest, HeldRepliesCountAgainstTheBoundAndPauseReading) {
  ConnectionLimits limits;
  limits.max_pending_reply_bytes = 4096;
  open(limits);
  host_.hold_at[1] = 1;
  constexpr int kCalls = 400;  // far more reply bytes than the bound
  send(alternating(kCalls));
  // The client reads everything it is sent: only the hold keeps the replies back.
  ASSERT_TRUE(run_until([&] { return host_.conn->paused(); }));
  for (int i = 0; i < 50; ++i) uv_run(&loop_, UV_RUN_NOWAIT);
  receive();
  EXPECT_TRUE(replies().empty());
  EXPECT_LT(host_.dispatched, kCalls);
  EXPECT_LE(host_.max_pending, limits.max_pending_reply_bytes + 2048);

  host_.conn->release_output(1);
  ASSERT_TRUE(run_until([&] { return replies().size() == static_cast<std::size_t>(kCalls); }));
  expect_alternating(replies());
  EXPECT_FALSE(host_.conn->paused());
  EXPECT_LE(host_.max_pending, limits.max_pending_reply_bytes + 2048);
}

TEST_F(ConnectionTest, HalfCloseWithHeldRepliesWaitsForTheRelease) {
  host_.hold_at[1] = 9;
  open();
  send(alternating(3));
  ASSERT_EQ(shutdown(client_, SHUT_WR), 0);
  ASSERT_TRUE(run_until([&] { return host_.dispatched == 3; }));
  for (int i = 0; i < 50; ++i) uv_run(&loop_, UV_RUN_NOWAIT);
  receive();
  EXPECT_TRUE(replies().empty());
  EXPECT_EQ(host_.closed_count, 0);  // the held replies are still owed

  host_.conn->release_output(9);
  ASSERT_TRUE(run_until([&] { return eof_ && host_.closed_count == 1; }));
  EXPECT_EQ(replies().size(), 3u);
  expect_alternating(replies());
}

TEST_F(ConnectionTest, ClosingWithHeldRepliesDropsThemCleanly) {
  host_.hold_at[1] = 4;
  open();
  send(alternating(2));
  ASSERT_TRUE(run_until([&] { return host_.dispatched == 2; }));
  host_.conn->close();
  host_.conn->release_output(4);  // between close() and the close callback: nothing to write
  ASSERT_TRUE(run_until([&] { return eof_ && host_.closed_count == 1; }));
  EXPECT_TRUE(replies().empty());
  EXPECT_EQ(host_.conn, nullptr);
}

}  // namespace
}  // namespace budgetd::daemon
