// daemon/procfs: the process identity recovery uses to tell a live process from a reused pid.
#include "daemon/procfs.h"

#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

namespace budgetd::daemon {
namespace {

TEST(ProcessIdentity, IsStableForOneProcess) {
  auto a = process_identity(getpid());
  auto b = process_identity(getpid());
  ASSERT_TRUE(a);
  EXPECT_EQ(a, b);
}

TEST(ProcessIdentity, DiffersBetweenProcessesAndIsGoneAfterExit) {
  pid_t child = fork();
  if (child == 0) {
    pause();
    _exit(0);
  }
  ASSERT_GT(child, 0);
  // pid 1 started long before the child (this test process may share its clock tick).
  auto mine = process_identity(1);
  auto theirs = process_identity(child);
  ASSERT_TRUE(theirs);
  EXPECT_NE(mine, theirs);
  kill(child, SIGKILL);
  waitpid(child, nullptr, 0);
  EXPECT_FALSE(process_identity(child));
}

TEST(ProcessIdentity, RefusesNonPositivePids) {
  EXPECT_FALSE(process_identity(0));
  EXPECT_FALSE(process_identity(-1));
}

}  // namespace
}  // namespace budgetd::daemon
