/* Framing and request validation shared by the daemon and the client library. */
#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "wire.h"

void wire_close_fds(int *fds, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		if (fds[i] >= 0)
			close(fds[i]);
		fds[i] = -1;
	}
}

int wire_send(int sock, const void *buf, size_t len, const int *fds, size_t nfds)
{
	union {
		char buf[CMSG_SPACE(sizeof(int) * WIRE_MAX_FDS)];
		struct cmsghdr align;
	} control;
	struct iovec iov = { .iov_base = (void *)buf, .iov_len = len };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };

	if (len > WIRE_MAX_RECORD || nfds > WIRE_MAX_FDS)
		return -EMSGSIZE;
	if (nfds > 0) {
		memset(&control, 0, sizeof(control));
		mh.msg_control = control.buf;
		mh.msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
		struct cmsghdr *cm = CMSG_FIRSTHDR(&mh);
		cm->cmsg_level = SOL_SOCKET;
		cm->cmsg_type = SCM_RIGHTS;
		cm->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
		memcpy(CMSG_DATA(cm), fds, sizeof(int) * nfds);
	}
	for (;;) {
		ssize_t n = sendmsg(sock, &mh, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (n >= 0)
			return 0;
		if (errno == EINTR)
			continue;
		return errno == EWOULDBLOCK ? -EAGAIN : -errno;
	}
}

/* Take the fds out of every SCM_RIGHTS message; more than WIRE_MAX_FDS is a protocol error. */
static int collect_fds(struct msghdr *mh, int fds[WIRE_MAX_FDS], size_t *ret_nfds)
{
	size_t n = 0;
	int r = 0;

	for (struct cmsghdr *cm = CMSG_FIRSTHDR(mh); cm; cm = CMSG_NXTHDR(mh, cm)) {
		if (cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS)
			continue;
		size_t k = (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int);
		const unsigned char *p = CMSG_DATA(cm);
		for (size_t i = 0; i < k; i++) {
			int fd;
			memcpy(&fd, p + i * sizeof(int), sizeof(int));
			if (n < WIRE_MAX_FDS)
				fds[n++] = fd;
			else {
				close(fd);
				r = -EPROTO;
			}
		}
	}
	*ret_nfds = n;
	return r;
}

ssize_t wire_recv(int sock, void *buf, size_t cap, int fds[WIRE_MAX_FDS], size_t *ret_nfds)
{
	/* Room for more fds than allowed, so that an over-full message is seen and closed. */
	union {
		char buf[CMSG_SPACE(sizeof(int) * WIRE_MAX_FDS * 4)];
		struct cmsghdr align;
	} control;
	struct iovec iov = { .iov_base = buf, .iov_len = cap };
	struct msghdr mh = {
		.msg_iov = &iov,
		.msg_iovlen = 1,
		.msg_control = control.buf,
		.msg_controllen = sizeof(control.buf),
	};
	ssize_t n;

	*ret_nfds = 0;
	do
		n = recvmsg(sock, &mh, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
	while (n < 0 && errno == EINTR);
	if (n < 0)
		return errno == EWOULDBLOCK ? -EAGAIN : -errno;

	int r = collect_fds(&mh, fds, ret_nfds);
	/* An empty record would read as end of stream, and the fds with it would stay open. */
	if (r == 0 && n == 0 && *ret_nfds > 0)
		r = -EPROTO;
	if (r == 0 && (mh.msg_flags & MSG_CTRUNC))
		r = -EPROTO;
	if (r == 0 && (mh.msg_flags & MSG_TRUNC))
		r = -EMSGSIZE;
	if (r < 0) {
		wire_close_fds(fds, *ret_nfds);
		*ret_nfds = 0;
		return r;
	}
	return n;
}

int wire_send_msg(int sock, const ProtobufCMessage *msg, const int *fds, size_t nfds)
{
	uint8_t buf[WIRE_MAX_RECORD];
	size_t len = protobuf_c_message_get_packed_size(msg);

	if (len > sizeof(buf))
		return -EMSGSIZE;
	protobuf_c_message_pack(msg, buf);
	return wire_send(sock, buf, len, fds, nfds);
}

/* A peer's string: at most max bytes and no control characters, so that it can never forge
 * a line in the daemon's log or a listing. */
static int check_string(const char *s, size_t max)
{
	if (!s)
		return 0;
	size_t n = strnlen(s, max + 1);
	if (n > max)
		return -EINVAL;
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
			return -EINVAL;
	return 0;
}

static int check_export(const P2pbuf__Export *e, const char **why)
{
	if (!e->device || !e->device[0]) {
		*why = "export: no device named";
		return -EINVAL;
	}
	if (check_string(e->device, WIRE_MAX_NAME) < 0) {
		*why = "export: device name too long or has control characters";
		return -EINVAL;
	}
	if (check_string(e->label, WIRE_MAX_STRING) < 0) {
		*why = "export: label too long or has control characters";
		return -EINVAL;
	}
	if (!e->has_bar) {
		*why = "export: no BAR given";
		return -EINVAL;
	}
	if (e->n_ranges > WIRE_MAX_RANGES) {
		*why = "export: too many ranges";
		return -E2BIG;
	}
	for (size_t i = 0; i < e->n_ranges; i++) {
		if (!e->ranges[i]->has_length) {
			*why = "export: a range has no length";
			return -EINVAL;
		}
	}
	return 0;
}

int wire_check_request(const P2pbuf__Request *req, const char **ret_why)
{
	const char *why = NULL;
	int r = 0;

	switch (req->body_case) {
	case P2PBUF__REQUEST__BODY_HELLO:
		if (check_string(req->hello->client_name, WIRE_MAX_STRING) < 0) {
			why = "hello: client name too long or has control characters";
			r = -EINVAL;
		}
		break;
	case P2PBUF__REQUEST__BODY_EXPORT:
		r = check_export(req->export, &why);
		break;
	case P2PBUF__REQUEST__BODY_RESET:
		if (!req->reset->device || !req->reset->device[0] ||
		    check_string(req->reset->device, WIRE_MAX_NAME) < 0) {
			why = "reset: missing, overlong or malformed device name";
			r = -EINVAL;
		}
		break;
	case P2PBUF__REQUEST__BODY_RELEASE:
		if (!req->release->has_lease_id) {
			why = "release: no lease id";
			r = -EINVAL;
		}
		break;
	case P2PBUF__REQUEST__BODY_REVOKE:
		if (!req->revoke->has_lease_id) {
			why = "revoke: no lease id";
			r = -EINVAL;
		}
		break;
	case P2PBUF__REQUEST__BODY_RECLAIM:
		if (!req->reclaim->has_lease_id || !req->reclaim->has_token ||
		    req->reclaim->token.len != WIRE_TOKEN_LEN) {
			why = "reclaim: needs a lease id and its token";
			r = -EINVAL;
		}
		break;
	case P2PBUF__REQUEST__BODY__NOT_SET:
		why = "request has no body (unknown request type?)";
		r = -EOPNOTSUPP;
		break;
	default:
		break;
	}
	if (r < 0)
		*ret_why = why;
	return r;
}

static const char *const reason_names[] = {
	[P2PBUF__REASON__REASON_UNSPECIFIED] = "unspecified",
	[P2PBUF__REASON__REASON_RELEASED] = "released",
	[P2PBUF__REASON__REASON_RESET] = "reset",
	[P2PBUF__REASON__REASON_DEVICE_GONE] = "device-gone",
	[P2PBUF__REASON__REASON_DEVICE_CYCLE] = "device-cycle",
	[P2PBUF__REASON__REASON_POLICY] = "policy",
	[P2PBUF__REASON__REASON_ADMIN] = "admin",
	[P2PBUF__REASON__REASON_TTL] = "ttl",
	[P2PBUF__REASON__REASON_OWNER_DISCONNECTED] = "owner-disconnected",
	[P2PBUF__REASON__REASON_SHUTDOWN] = "shutdown",
	[P2PBUF__REASON__REASON_RESTART] = "restart",
};

static const char *const device_state_names[] = {
	[P2PBUF__DEVICE_STATE_KIND__DEVICE_STATE_UNSPECIFIED] = "unspecified",
	[P2PBUF__DEVICE_STATE_KIND__DEVICE_READY] = "ready",
	[P2PBUF__DEVICE_STATE_KIND__DEVICE_CYCLING] = "cycling",
	[P2PBUF__DEVICE_STATE_KIND__DEVICE_GONE] = "gone",
	[P2PBUF__DEVICE_STATE_KIND__DEVICE_FAILED] = "failed",
};

static const char *const lease_state_names[] = {
	[P2PBUF__LEASE_STATE_KIND__LEASE_STATE_UNSPECIFIED] = "unspecified",
	[P2PBUF__LEASE_STATE_KIND__LEASE_ACTIVE] = "active",
	[P2PBUF__LEASE_STATE_KIND__LEASE_REVOKING] = "revoking",
	[P2PBUF__LEASE_STATE_KIND__LEASE_ENDED] = "ended",
};

#define NAME_OF(table, i)                                                                          \
	((i) >= 0 && (size_t)(i) < sizeof(table) / sizeof((table)[0]) && (table)[i] ? (table)[i]   \
										    : "unknown")

const char *wire_reason_name(int reason)
{
	return NAME_OF(reason_names, reason);
}

const char *wire_device_state_name(int state)
{
	return NAME_OF(device_state_names, state);
}

const char *wire_lease_state_name(int state)
{
	return NAME_OF(lease_state_names, state);
}
