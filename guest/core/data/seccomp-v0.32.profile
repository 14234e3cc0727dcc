# The default seccomp profile of BuildKit v0.32.2: github.com/moby/profiles/seccomp
# (default.json, vendored by BuildKit at v0.32.2), in this directory's text format.
#
# Format, one directive a line ('#' starts a comment):
#   default-action ACTION [ERRNO]      the action for any other syscall, and its errno
#   arch NATIVE NAME [SUBARCH...]      seccomp arch of a native arch name, and its sub-arches
#   rule ACTION NAME...                starts a rule; lines below qualify it
#     errno-ret ERRNO                  the errno the action returns
#     arg INDEX OP VALUE [VALUE_TWO]   an argument condition
#     min-kernel MAJOR.MINOR           only on kernels at least this new
#     include-arches NAME...           only on these architectures
#     exclude-arches NAME...           not on these architectures
#     include-caps CAP...              only when all these are in the bounding set
#     exclude-caps CAP...              not when any of these is in the bounding set
default-action SCMP_ACT_ERRNO 1
arch SCMP_ARCH_X86_64 amd64 SCMP_ARCH_X86 SCMP_ARCH_X32
arch SCMP_ARCH_AARCH64 arm64 SCMP_ARCH_ARM
arch SCMP_ARCH_MIPS64 mips64 SCMP_ARCH_MIPS SCMP_ARCH_MIPS64N32
arch SCMP_ARCH_MIPS64N32 mips64n32 SCMP_ARCH_MIPS SCMP_ARCH_MIPS64
arch SCMP_ARCH_MIPSEL64 mipsel64 SCMP_ARCH_MIPSEL SCMP_ARCH_MIPSEL64N32
arch SCMP_ARCH_MIPSEL64N32 mips3l64n32 SCMP_ARCH_MIPSEL SCMP_ARCH_MIPSEL64
arch SCMP_ARCH_S390X s390x SCMP_ARCH_S390
arch SCMP_ARCH_RISCV64 riscv64
arch SCMP_ARCH_LOONGARCH64 loong64
rule SCMP_ACT_ALLOW \
  accept \
  accept4 \
  access \
  adjtimex \
  alarm \
  bind \
  brk \
  cachestat \
  capget \
  capset \
  chdir \
  chmod \
  chown \
  chown32 \
  clock_adjtime \
  clock_adjtime64 \
  clock_getres \
  clock_getres_time64 \
  clock_gettime \
  clock_gettime64 \
  clock_nanosleep \
  clock_nanosleep_time64 \
  close \
  close_range \
  connect \
  copy_file_range \
  creat \
  dup \
  dup2 \
  dup3 \
  epoll_create \
  epoll_create1 \
  epoll_ctl \
  epoll_ctl_old \
  epoll_pwait \
  epoll_pwait2 \
  epoll_wait \
  epoll_wait_old \
  eventfd \
  eventfd2 \
  execve \
  execveat \
  exit \
  exit_group \
  faccessat \
  faccessat2 \
  fadvise64 \
  fadvise64_64 \
  fallocate \
  fanotify_mark \
  fchdir \
  fchmod \
  fchmodat \
  fchmodat2 \
  fchown \
  fchown32 \
  fchownat \
  fcntl \
  fcntl64 \
  fdatasync \
  fgetxattr \
  flistxattr \
  flock \
  fork \
  fremovexattr \
  fsetxattr \
  fstat \
  fstat64 \
  fstatat64 \
  fstatfs \
  fstatfs64 \
  fsync \
  ftruncate \
  ftruncate64 \
  futex \
  futex_requeue \
  futex_time64 \
  futex_wait \
  futex_waitv \
  futex_wake \
  futimesat \
  getcpu \
  getcwd \
  getdents \
  getdents64 \
  getegid \
  getegid32 \
  geteuid \
  geteuid32 \
  getgid \
  getgid32 \
  getgroups \
  getgroups32 \
  getitimer \
  getpeername \
  getpgid \
  getpgrp \
  getpid \
  getppid \
  getpriority \
  getrandom \
  getresgid \
  getresgid32 \
  getresuid \
  getresuid32 \
  getrlimit \
  get_robust_list \
  getrusage \
  getsid \
  getsockname \
  getsockopt \
  get_thread_area \
  gettid \
  gettimeofday \
  getuid \
  getuid32 \
  getxattr \
  getxattrat \
  inotify_add_watch \
  inotify_init \
  inotify_init1 \
  inotify_rm_watch \
  io_cancel \
  ioctl \
  io_destroy \
  io_getevents \
  io_pgetevents \
  io_pgetevents_time64 \
  ioprio_get \
  ioprio_set \
  io_setup \
  io_submit \
  ipc \
  kill \
  landlock_add_rule \
  landlock_create_ruleset \
  landlock_restrict_self \
  lchown \
  lchown32 \
  lgetxattr \
  link \
  linkat \
  listen \
  listmount \
  listxattr \
  listxattrat \
  llistxattr \
  _llseek \
  lremovexattr \
  lseek \
  lsetxattr \
  lstat \
  lstat64 \
  madvise \
  map_shadow_stack \
  membarrier \
  memfd_create \
  memfd_secret \
  mincore \
  mkdir \
  mkdirat \
  mknod \
  mknodat \
  mlock \
  mlock2 \
  mlockall \
  mmap \
  mmap2 \
  mprotect \
  mq_getsetattr \
  mq_notify \
  mq_open \
  mq_timedreceive \
  mq_timedreceive_time64 \
  mq_timedsend \
  mq_timedsend_time64 \
  mq_unlink \
  mremap \
  mseal \
  msgctl \
  msgget \
  msgrcv \
  msgsnd \
  msync \
  munlock \
  munlockall \
  munmap \
  name_to_handle_at \
  nanosleep \
  newfstatat \
  _newselect \
  open \
  openat \
  openat2 \
  pause \
  pidfd_open \
  pidfd_send_signal \
  pipe \
  pipe2 \
  pkey_alloc \
  pkey_free \
  pkey_mprotect \
  poll \
  ppoll \
  ppoll_time64 \
  prctl \
  pread64 \
  preadv \
  preadv2 \
  prlimit64 \
  process_mrelease \
  pselect6 \
  pselect6_time64 \
  pwrite64 \
  pwritev \
  pwritev2 \
  read \
  readahead \
  readlink \
  readlinkat \
  readv \
  recv \
  recvfrom \
  recvmmsg \
  recvmmsg_time64 \
  recvmsg \
  remap_file_pages \
  removexattr \
  removexattrat \
  rename \
  renameat \
  renameat2 \
  restart_syscall \
  riscv_hwprobe \
  rmdir \
  rseq \
  rt_sigaction \
  rt_sigpending \
  rt_sigprocmask \
  rt_sigqueueinfo \
  rt_sigreturn \
  rt_sigsuspend \
  rt_sigtimedwait \
  rt_sigtimedwait_time64 \
  rt_tgsigqueueinfo \
  sched_getaffinity \
  sched_getattr \
  sched_getparam \
  sched_get_priority_max \
  sched_get_priority_min \
  sched_getscheduler \
  sched_rr_get_interval \
  sched_rr_get_interval_time64 \
  sched_setaffinity \
  sched_setattr \
  sched_setparam \
  sched_setscheduler \
  sched_yield \
  seccomp \
  select \
  semctl \
  semget \
  semop \
  semtimedop \
  semtimedop_time64 \
  send \
  sendfile \
  sendfile64 \
  sendmmsg \
  sendmsg \
  sendto \
  setfsgid \
  setfsgid32 \
  setfsuid \
  setfsuid32 \
  setgid \
  setgid32 \
  setgroups \
  setgroups32 \
  setitimer \
  setpgid \
  setpriority \
  setregid \
  setregid32 \
  setresgid \
  setresgid32 \
  setresuid \
  setresuid32 \
  setreuid \
  setreuid32 \
  setrlimit \
  set_robust_list \
  setsid \
  setsockopt \
  set_thread_area \
  set_tid_address \
  setuid \
  setuid32 \
  setxattr \
  setxattrat \
  shmat \
  shmctl \
  shmdt \
  shmget \
  shutdown \
  sigaltstack \
  signalfd \
  signalfd4 \
  sigprocmask \
  sigreturn \
  socketcall \
  socketpair \
  splice \
  stat \
  stat64 \
  statfs \
  statfs64 \
  statmount \
  statx \
  symlink \
  symlinkat \
  sync \
  sync_file_range \
  syncfs \
  sysinfo \
  tee \
  tgkill \
  time \
  timer_create \
  timer_delete \
  timer_getoverrun \
  timer_gettime \
  timer_gettime64 \
  timer_settime \
  timer_settime64 \
  timerfd_create \
  timerfd_gettime \
  timerfd_gettime64 \
  timerfd_settime \
  timerfd_settime64 \
  times \
  tkill \
  truncate \
  truncate64 \
  ugetrlimit \
  umask \
  uname \
  unlink \
  unlinkat \
  uretprobe \
  utime \
  utimensat \
  utimensat_time64 \
  utimes \
  vfork \
  vmsplice \
  wait4 \
  waitid \
  waitpid \
  write \
  writev
rule SCMP_ACT_ALLOW \
  process_vm_readv \
  process_vm_writev \
  ptrace
  min-kernel 4.8
rule SCMP_ACT_ALLOW \
  socket
  arg 0 SCMP_CMP_LT 38
rule SCMP_ACT_ALLOW \
  socket
  arg 0 SCMP_CMP_EQ 39
rule SCMP_ACT_ALLOW \
  socket
  arg 0 SCMP_CMP_GT 40
rule SCMP_ACT_ALLOW \
  personality
  arg 0 SCMP_CMP_EQ 0
rule SCMP_ACT_ALLOW \
  personality
  arg 0 SCMP_CMP_EQ 8
rule SCMP_ACT_ALLOW \
  personality
  arg 0 SCMP_CMP_EQ 131072
rule SCMP_ACT_ALLOW \
  personality
  arg 0 SCMP_CMP_EQ 131080
rule SCMP_ACT_ALLOW \
  personality
  arg 0 SCMP_CMP_EQ 4294967295
rule SCMP_ACT_ALLOW \
  sync_file_range2 \
  swapcontext
  include-arches ppc64le
rule SCMP_ACT_ALLOW \
  arm_fadvise64_64 \
  arm_sync_file_range \
  sync_file_range2 \
  breakpoint \
  cacheflush \
  set_tls
  include-arches arm arm64
rule SCMP_ACT_ALLOW \
  arch_prctl
  include-arches amd64 x32
rule SCMP_ACT_ALLOW \
  modify_ldt
  include-arches amd64 x32 x86
rule SCMP_ACT_ALLOW \
  s390_pci_mmio_read \
  s390_pci_mmio_write \
  s390_runtime_instr
  include-arches s390 s390x
rule SCMP_ACT_ALLOW \
  riscv_flush_icache
  include-arches riscv64
rule SCMP_ACT_ALLOW \
  open_by_handle_at
  include-caps CAP_DAC_READ_SEARCH
rule SCMP_ACT_ALLOW \
  bpf \
  clone \
  clone3 \
  fanotify_init \
  fsconfig \
  fsmount \
  fsopen \
  fspick \
  lookup_dcookie \
  lsm_get_self_attr \
  lsm_list_modules \
  lsm_set_self_attr \
  mount \
  mount_setattr \
  move_mount \
  open_tree \
  perf_event_open \
  quotactl \
  quotactl_fd \
  setdomainname \
  sethostname \
  setns \
  syslog \
  umount \
  umount2 \
  unshare
  include-caps CAP_SYS_ADMIN
rule SCMP_ACT_ALLOW \
  clone
  arg 0 SCMP_CMP_MASKED_EQ 2114060288
  exclude-arches s390 s390x
  exclude-caps CAP_SYS_ADMIN
rule SCMP_ACT_ALLOW \
  clone
  arg 1 SCMP_CMP_MASKED_EQ 2114060288
  include-arches s390 s390x
  exclude-caps CAP_SYS_ADMIN
rule SCMP_ACT_ERRNO \
  clone3
  errno-ret 38
  exclude-caps CAP_SYS_ADMIN
rule SCMP_ACT_ALLOW \
  reboot
  include-caps CAP_SYS_BOOT
rule SCMP_ACT_ALLOW \
  chroot
  include-caps CAP_SYS_CHROOT
rule SCMP_ACT_ALLOW \
  delete_module \
  init_module \
  finit_module
  include-caps CAP_SYS_MODULE
rule SCMP_ACT_ALLOW \
  acct
  include-caps CAP_SYS_PACCT
rule SCMP_ACT_ALLOW \
  kcmp \
  pidfd_getfd \
  process_madvise \
  process_vm_readv \
  process_vm_writev \
  ptrace
  include-caps CAP_SYS_PTRACE
rule SCMP_ACT_ALLOW \
  iopl \
  ioperm
  include-caps CAP_SYS_RAWIO
rule SCMP_ACT_ALLOW \
  settimeofday \
  stime \
  clock_settime \
  clock_settime64
  include-caps CAP_SYS_TIME
rule SCMP_ACT_ALLOW \
  vhangup
  include-caps CAP_SYS_TTY_CONFIG
rule SCMP_ACT_ALLOW \
  get_mempolicy \
  mbind \
  set_mempolicy \
  set_mempolicy_home_node
  include-caps CAP_SYS_NICE
rule SCMP_ACT_ALLOW \
  syslog
  include-caps CAP_SYSLOG
rule SCMP_ACT_ALLOW \
  bpf
  include-caps CAP_BPF
rule SCMP_ACT_ALLOW \
  perf_event_open
  include-caps CAP_PERFMON
