/* The daemon's seccomp sandbox: once start-up is done, every thread may make only the system
 * calls that serving clients and cycling devices need. */
#pragma once

/* 1 in a build with AddressSanitizer (GCC's __SANITIZE_ADDRESS__, clang's __has_feature):
 * the filter then also allows what the sanitizer runtime does at thread and process exit
 * (LeakSanitizer suspends the threads with ptrace from a cloned tracer). 0 in every other
 * build, release builds included. */
#if defined(__SANITIZE_ADDRESS__)
#define SANDBOX_SANITIZER_RUNTIME 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define SANDBOX_SANITIZER_RUNTIME 1
#endif
#endif
#ifndef SANDBOX_SANITIZER_RUNTIME
#define SANDBOX_SANITIZER_RUNTIME 0
#endif

enum sandbox_mode {
	SANDBOX_ENFORCE = 0, /* a call outside the allow-list kills the process (the default) */
	SANDBOX_LOG, /* ...is logged by the kernel and allowed: for finding what is missing */
	SANDBOX_OFF, /* no filter at all: for diagnosis only */
};

/* "enforce", "log" or "off" into *ret_mode. Returns 0 or -EINVAL. */
int sandbox_parse_mode(const char *s, enum sandbox_mode *ret_mode);

/* The option's spelling of mode. */
const char *sandbox_mode_name(enum sandbox_mode mode);

/* Install the allow-list on every thread of the process (threads created later inherit it)
 * and set no-new-privs; nothing for SANDBOX_OFF. Call it once, at the end of start-up: sockets
 * listening, policy loaded, worker running, devices open. Logs what it did, or why it failed;
 * returns 0 or -errno, and on failure nothing is installed. */
int sandbox_apply(enum sandbox_mode mode);
