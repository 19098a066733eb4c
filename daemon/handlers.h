/* The dispatch table: one handler per request type, which requests are allowed before Hello
 * (only Hello itself), authorization, and the replies. */
#pragma once

#include "session.h"
#include "wire.h"

/* Serve one decoded request that passed the wire checks. */
void handle_request(struct session *s, const P2pbuf__Request *req);

/* A count of holders off the loop is back: exports that waited for it are served again. */
void handlers_counted(struct daemon *d);
