// The listening socket: safe stale-socket removal, refusing a live daemon's path, mode,
// group and parent directory, socket activation, and accepting through libuv.
#include "daemon/listener.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

namespace budgetd::daemon {
namespace {

namespace fs = std::filesystem;

class TempDir {
 public:
  TempDir() {
    std::string tmpl = (fs::temp_directory_path() / "budgetd-listener-XXXXXX").string();
    path_ = mkdtemp(tmpl.data());
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  std::string operator/(const std::string& name) const { return path_ + "/" + name; }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

sockaddr_un address(const std::string& path) {
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  std::snprintf(a.sun_path, sizeof a.sun_path, "%s", path.c_str());
  return a;
}

// A socket file at `path` that nobody listens on any more (what a crashed daemon leaves).
void make_stale_socket(const std::string& path) {
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ASSERT_GE(fd, 0);
  sockaddr_un a = address(path);
  ASSERT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  close(fd);  // the file stays
}

// A live listener at `path`; close the returned fd to stop it.
int make_live_socket(const std::string& path) {
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un a = address(path);
  if (bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || listen(fd, 16) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

bool connects(const std::string& path) {
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un a = address(path);
  bool ok = connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
  close(fd);
  return ok;
}

bool is_socket(const std::string& path) {
  struct stat st {};
  return lstat(path.c_str(), &st) == 0 && S_ISSOCK(st.st_mode);
}

TEST(RemoveStaleSocket, NothingThereIsFine) {
  TempDir dir;
  EXPECT_TRUE(remove_stale_socket(dir / "absent").has_value());
}

TEST(RemoveStaleSocket, RemovesASocketNobodyAnswers) {
  TempDir dir;
  const std::string path = dir / "sock";
  make_stale_socket(path);
  ASSERT_TRUE(is_socket(path));
  auto r = remove_stale_socket(path);
  ASSERT_TRUE(r.has_value()) << r.error();
  EXPECT_FALSE(fs::exists(path));
}

TEST(RemoveStaleSocket, RefusesWhenALiveDaemonAnswers) {
  TempDir dir;
  const std::string path = dir / "sock";
  int live = make_live_socket(path);
  ASSERT_GE(live, 0);
  auto r = remove_stale_socket(path);
  ASSERT_FALSE(r.has_value());
  EXPECT_NE(r.error().find("listening"), std::string::npos) << r.error();
  EXPECT_TRUE(is_socket(path));
  EXPECT_TRUE(connects(path));  // the other daemon keeps its socket
  close(live);
}

TEST(RemoveStaleSocket, NeverRemovesSomethingThatIsNotASocket) {
  TempDir dir;
  const std::string path = dir / "file";
  std::ofstream(path) << "precious";
  auto r = remove_stale_socket(path);
  ASSERT_FALSE(r.has_value());
  EXPECT_NE(r.error().find("not a socket"), std::string::npos) << r.error();
  EXPECT_TRUE(fs::exists(path));
}

TEST(RemoveStaleSocket, NeverFollowsASymlink) {
  TempDir dir;
  const std::string target = dir / "target";
  make_stale_socket(target);
  const std::string link = dir / "link";
  fs::create_symlink(target, link);
  EXPECT_FALSE(remove_stale_socket(link).has_value());
  EXPECT_TRUE(is_socket(target));
}

TEST(BindSocket, ReplacesAStaleSocketAndListens) {
  TempDir dir;
  const std::string path = dir / "sock";
  make_stale_socket(path);
  auto s = bind_socket(ListenSpec{path, 0660, ""});
  ASSERT_TRUE(s.has_value()) << s.error();
  EXPECT_TRUE(s->owns_path);
  EXPECT_FALSE(s->activated);
  EXPECT_TRUE(connects(path));
  close(s->fd);
  unlink_if_ours(*s);
  EXPECT_FALSE(fs::exists(path));
}

TEST(BindSocket, RefusesToStartWhenAnotherDaemonAnswers) {
  TempDir dir;
  const std::string path = dir / "sock";
  int live = make_live_socket(path);
  ASSERT_GE(live, 0);
  auto s = bind_socket(ListenSpec{path, 0660, ""});
  ASSERT_FALSE(s.has_value());
  EXPECT_TRUE(connects(path));
  close(live);
}

TEST(BindSocket, CreatesTheParentDirectoryAndSetsTheMode) {
  TempDir dir;
  const std::string path = dir / "a/b/io.budgetd";
  auto s = bind_socket(ListenSpec{path, 0600, ""});
  ASSERT_TRUE(s.has_value()) << s.error();
  struct stat st {};
  ASSERT_EQ(lstat(path.c_str(), &st), 0);
  EXPECT_TRUE(S_ISSOCK(st.st_mode));
  EXPECT_EQ(st.st_mode & 07777, 0600u);
  ASSERT_EQ(stat((dir / "a/b").c_str(), &st), 0);
  EXPECT_TRUE(S_ISDIR(st.st_mode));
  close(s->fd);
  unlink_if_ours(*s);
}

TEST(BindSocket, SetsTheGroupByNumber) {
  TempDir dir;
  const std::string path = dir / "sock";
  auto s = bind_socket(ListenSpec{path, 0660, std::to_string(getegid())});
  ASSERT_TRUE(s.has_value()) << s.error();
  EXPECT_TRUE(s->warnings.empty());
  struct stat st {};
  ASSERT_EQ(lstat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_gid, getegid());
  close(s->fd);
  unlink_if_ours(*s);
}

TEST(BindSocket, AnUnknownGroupIsAWarningNotAFailure) {
  TempDir dir;
  auto s = bind_socket(ListenSpec{dir / "sock", 0660, "no-such-group-budgetd-test"});
  ASSERT_TRUE(s.has_value()) << s.error();
  ASSERT_EQ(s->warnings.size(), 1u);
  EXPECT_NE(s->warnings[0].find("unknown group"), std::string::npos) << s->warnings[0];
  close(s->fd);
  unlink_if_ours(*s);
}

TEST(BindSocket, RefusesAPathTooLongForAUnixAddress) {
  TempDir dir;
  auto s = bind_socket(ListenSpec{dir / std::string(120, 'x'), 0660, ""});
  ASSERT_FALSE(s.has_value());
  EXPECT_NE(s.error().find("too long"), std::string::npos) << s.error();
}

TEST(UnlinkIfOurs, LeavesASocketThatReplacedOurs) {
  TempDir dir;
  const std::string path = dir / "sock";
  auto s = bind_socket(ListenSpec{path, 0660, ""});
  ASSERT_TRUE(s.has_value()) << s.error();
  close(s->fd);
  // Keep our inode allocated, so the new socket cannot reuse its number.
  ASSERT_EQ(link(path.c_str(), (dir / "keep").c_str()), 0);
  // Another daemon removed our (now stale) socket and bound its own.
  ASSERT_TRUE(remove_stale_socket(path).has_value());
  int other = make_live_socket(path);
  ASSERT_GE(other, 0);
  unlink_if_ours(*s);
  EXPECT_TRUE(connects(path));
  close(other);
}

TEST(SocketFromSystemd, NoneWithoutListenFds) {
  unsetenv("LISTEN_FDS");
  unsetenv("LISTEN_PID");
  auto r = socket_from_systemd();
  ASSERT_TRUE(r.has_value()) << r.error();
  EXPECT_FALSE(r->has_value());
}

// Emulates systemd: the listening socket at fd 3 (SD_LISTEN_FDS_START), LISTEN_FDS=1 and
// LISTEN_PID=getpid().
class ActivatedSocket : public ::testing::Test {
 protected:
  void SetUp() override {
    saved_ = fcntl(3, F_DUPFD_CLOEXEC, 100);  // whatever the test runner had at fd 3
  }
  void TearDown() override {
    unsetenv("LISTEN_FDS");
    unsetenv("LISTEN_PID");
    if (saved_ >= 0) {
      dup2(saved_, 3);
      close(saved_);
    } else {
      close(3);
    }
  }
  void pass(int fd) {
    if (fd != 3) {
      ASSERT_EQ(dup2(fd, 3), 3);
      close(fd);
    }
    setenv("LISTEN_FDS", "1", 1);
    setenv("LISTEN_PID", std::to_string(getpid()).c_str(), 1);
  }
  int saved_ = -1;
};

TEST_F(ActivatedSocket, UsesThePassedSocketAndNeverUnlinksIt) {
  TempDir dir;
  const std::string path = dir / "activated";
  int fd = make_live_socket(path);
  ASSERT_GE(fd, 0);
  pass(fd);
  auto s = open_listen_socket(ListenSpec{dir / "configured", 0660, ""});
  ASSERT_TRUE(s.has_value()) << s.error();
  EXPECT_TRUE(s->activated);
  EXPECT_EQ(s->fd, 3);
  EXPECT_EQ(s->path, path);
  EXPECT_FALSE(s->owns_path);
  EXPECT_FALSE(fs::exists(dir / "configured"));  // nothing bound by the daemon
  unlink_if_ours(*s);
  EXPECT_TRUE(is_socket(path));
  EXPECT_EQ(std::getenv("LISTEN_FDS"), nullptr);  // consumed, not inherited further
}

TEST_F(ActivatedSocket, RefusesSomethingThatIsNotAListeningSocket) {
  int fds[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM, 0, fds), 0);
  close(fds[1]);
  pass(fds[0]);
  auto r = socket_from_systemd();
  EXPECT_FALSE(r.has_value());
}

// Runs the loop without blocking until `done` or a deadline (no fixed sleeps).
template <class Pred>
bool run_until(uv_loop_t* loop, Pred done) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (!done()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    uv_run(loop, UV_RUN_NOWAIT);
  }
  return true;
}

TEST(Listener, AcceptsThroughLibuvAndClosesCleanly) {
  TempDir dir;
  const std::string path = dir / "sock";
  uv_loop_t loop;
  ASSERT_EQ(uv_loop_init(&loop), 0);
  std::vector<uv_pipe_t*> accepted;
  {
    Listener listener(&loop);
    auto s = bind_socket(ListenSpec{path, 0660, ""});
    ASSERT_TRUE(s.has_value()) << s.error();
    auto started = listener.start(std::move(*s), [&](uv_stream_t* server) {
      auto* client = new uv_pipe_t;
      uv_pipe_init(&loop, client, 0);
      ASSERT_EQ(uv_accept(server, reinterpret_cast<uv_stream_t*>(client)), 0);
      accepted.push_back(client);
    });
    ASSERT_TRUE(started.has_value()) << started.error();
    EXPECT_TRUE(listener.listening());

    int c1 = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int c2 = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un a = address(path);
    ASSERT_EQ(connect(c1, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
    ASSERT_EQ(connect(c2, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
    ASSERT_TRUE(run_until(&loop, [&] { return accepted.size() == 2; }));

    listener.close();
    EXPECT_FALSE(fs::exists(path));  // ours: removed at close
    for (auto* p : accepted)
      uv_close(reinterpret_cast<uv_handle_t*>(p),
               [](uv_handle_t* h) { delete reinterpret_cast<uv_pipe_t*>(h); });
    ASSERT_TRUE(run_until(&loop, [&] { return listener.closed(); }));
    uv_run(&loop, UV_RUN_DEFAULT);
    close(c1);
    close(c2);
  }
  EXPECT_EQ(uv_loop_close(&loop), 0);
}

}  // namespace
}  // namespace budgetd::daemon
