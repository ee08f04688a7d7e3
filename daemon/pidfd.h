// pidfd system calls through syscall(2): glibc 2.36 declares pidfd_open and
// pidfd_send_signal only in <sys/pidfd.h>, which older systems lack. A pidfd names one
// process, not a pid number: a signal through it can never reach a process that reused
// the pid (ESRCH instead).
#pragma once

#include <errno.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <unistd.h>

#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif
#ifndef SYS_pidfd_send_signal
#define SYS_pidfd_send_signal 424
#endif

namespace budgetd::daemon {

// A close-on-exec pidfd for `pid`, or -errno.
inline int pidfd_open_pid(pid_t pid) {
  long r = syscall(SYS_pidfd_open, pid, 0);
  return r < 0 ? -errno : static_cast<int>(r);
}

// 0, or -errno (ESRCH: the process has exited).
inline int pidfd_signal(int pidfd, int sig) {
  long r = syscall(SYS_pidfd_send_signal, pidfd, sig, nullptr, 0);
  return r < 0 ? -errno : 0;
}

}  // namespace budgetd::daemon
