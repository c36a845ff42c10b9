/* ot_pgoutput: PostgreSQL's logical replication messages (pgoutput, protocol 1), decoded in place. */
#ifndef OT_PGOUTPUT_H
#define OT_PGOUTPUT_H

#include <stddef.h>
#include <stdint.h>

#define OT_PGO_MAX_COLS 32

/* A slice of the message: not NUL-terminated, valid as long as the message is. */
struct ot_pgo_str { const char *p; size_t len; };

struct ot_pgo_msg {
	char type;            /* 'B' begin, 'C' commit, 'R' relation, 'I' insert; 0 for the rest */
	uint64_t lsn;         /* B: the transaction's final LSN; C: its end LSN */
	uint32_t xid;         /* B */
	uint32_t relid;       /* R, I */
	struct ot_pgo_str relname;                  /* R */
	int ncols;                                  /* R, I: at most OT_PGO_MAX_COLS are kept */
	struct ot_pgo_str cols[OT_PGO_MAX_COLS];    /* R: names; I: text values */
	unsigned char isnull[OT_PGO_MAX_COLS];      /* I: null, or an unchanged TOAST value */
};

/* Decodes one pgoutput message (the XLogData payload, starting at its type byte) into m.
 * Nothing is allocated: m's slices point into buf. Returns 0, or -1 when the message is
 * truncated or malformed. A message of a type not listed above decodes with type 0. */
int ot_pgo_decode(const unsigned char *buf, size_t len, struct ot_pgo_msg *m);

/* Whether the transaction xid (32 bits, as pgoutput sends it) is visible in snapshot, the
 * text of txid_current_snapshot() ("xmin:xmax:xip,..."). Returns 1 or 0, or -1 if snapshot
 * does not parse. A decoded commit can reach the relay before the transaction is visible
 * to other sessions; this tells when it is. */
int ot_pgo_xid_visible(uint32_t xid, const char *snapshot);

#endif
