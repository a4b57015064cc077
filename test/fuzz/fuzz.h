/*
 * fuzz.h — elmo-fuzz, a fuzzer of the worker's HTTP surface.
 *
 * A case is one or more TCP connections, each carrying one or more HTTP
 * requests written byte for byte (framing included), so that framing can be
 * mutated as freely as bodies and headers.  Every case is generated from a
 * seed number and its index alone, and can be written to and read back from
 * a text file (the regression corpus).
 */
#ifndef ELMO_FUZZ_H
#define ELMO_FUZZ_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ---------------------------------------------------------------- bytes */

typedef struct Buf
{
	unsigned char *p;
	size_t		len;
	size_t		cap;
} Buf;

void		buf_reserve(Buf *b, size_t n);
void		buf_add(Buf *b, const void *p, size_t n);
void		buf_adds(Buf *b, const char *s);
void		buf_addc(Buf *b, int c);
void		buf_addf(Buf *b, const char *fmt,...) __attribute__((format(printf, 2, 3)));
void		buf_set(Buf *b, const void *p, size_t n);
void		buf_sets(Buf *b, const char *s);
void		buf_copy(Buf *dst, const Buf *src);
void		buf_insert(Buf *b, size_t at, const void *p, size_t n);
void		buf_cut(Buf *b, size_t at, size_t n);
void		buf_free(Buf *b);
bool		buf_eq(const Buf *a, const void *p, size_t n);
bool		buf_eqs(const Buf *a, const char *s);
bool		buf_ieqs(const Buf *a, const char *s);
const char *buf_cstr(Buf *b);	/* NUL-terminated view (the NUL is not counted) */
long		buf_find(const Buf *b, size_t from, const char *needle);

/* printable form: printable ASCII kept, \\ \xNN otherwise, runs as \{N}c */
void		escape_bytes(Buf *out, const unsigned char *p, size_t n);
bool		unescape_bytes(Buf *out, const char *s, size_t n);
/* a short printable preview (escaped, cut to max characters) into a static buffer */
const char *preview(const unsigned char *p, size_t n, size_t max);

bool		utf8_valid(const unsigned char *p, size_t n);
long		utf8_invalid_at(const unsigned char *p, size_t n);	/* -1: valid */
void		copy_str(char *dst, size_t size, const char *src);	/* always terminated */

/* ---------------------------------------------------------------- random */

typedef struct Rng
{
	uint64_t	s[4];
} Rng;

void		rng_seed(Rng *r, uint64_t seed, uint64_t stream);
uint64_t	rng_next(Rng *r);
uint32_t	rng_below(Rng *r, uint32_t n);	/* 0 .. n-1 */
bool		rng_chance(Rng *r, int percent);
#define PICK(r, arr) ((arr)[rng_below((r), sizeof(arr) / sizeof((arr)[0]))])

/* ---------------------------------------------------------------- cases */

typedef struct Header
{
	Buf			name;
	Buf			value;			/* may hold ${TOKEN}, expanded when sent */
} Header;

typedef enum Framing
{
	FR_LENGTH,					/* Content-Length = body length + cl_delta */
	FR_CHUNKED,					/* Transfer-Encoding: chunked, chunks of `chunk` bytes */
	FR_BOTH,					/* both headers; chunked wins (or the request is refused) */
	FR_NONE,					/* no length at all: the body bytes follow as junk */
	FR_CL_TWICE,				/* two Content-Length headers that disagree */
	FR_CL_TEXT,					/* Content-Length given as cl_text, raw */
	FR_CHUNKED_BAD,				/* a broken chunk size line */
	FR_CHUNKED_UNFINISHED		/* no last chunk: the request never ends */
} Framing;

#define MAX_REQ  4
#define MAX_CONN 4

typedef struct Req
{
	Buf			line;			/* request line, without its end of line */
	Header	   *h;
	int			nh;
	int			hcap;
	Buf			body;			/* payload before framing */
	Framing		framing;
	long		cl_delta;
	int			chunk;			/* chunk size for chunked framings */
	Buf			cl_text;		/* FR_CL_TEXT: the Content-Length value */
	bool		lf_only;		/* bare LF line endings */
} Req;

typedef enum SendMode
{
	SEND_ALL,					/* every byte at once (pipelining when several requests) */
	SEND_SEQUENTIAL,			/* keep-alive: next request once the previous one is answered */
	SEND_SLOW					/* in `pieces` writes, `delay_ms` apart */
} SendMode;

typedef struct Conn
{
	Req			req[MAX_REQ];
	int			nreq;
	SendMode	mode;
	int			pieces;
	int			delay_ms;
	long		truncate;		/* -1, or stop after this many bytes and half-close */
	Buf			prefix;			/* bytes before the first request line */
	Buf			trailing;		/* bytes after the last request */
} Conn;

typedef struct Case
{
	Conn		conn[MAX_CONN];
	int			nconn;
	char		name[96];		/* e.g. "seed 42 case 1234" or a file name */
	Buf			mutations;		/* what was done to the seed, for humans */
} Case;

void		req_free(Req *r);
void		case_free(Case *c);
Header	   *req_header_add(Req *r, const char *name, const void *value, size_t vlen);
Header	   *req_header_insert(Req *r, int at, const char *name, const void *value, size_t vlen);
int			req_header_find(const Req *r, const char *name, int from);	/* case-insensitive */
void		req_header_del(Req *r, int i);
void		req_copy(Req *dst, const Req *src);

/* request line parts (copies, into a static buffer) */
const char *req_method(const Req *r);
const char *req_target(const Req *r);
const char *req_message(const Req *r);	/* last path segment, "" when none */

/* ---------------------------------------------------------------- seeds */

typedef struct Seed
{
	char		file[128];
	Req			req;
} Seed;

int			seeds_load(const char *dir, Seed **out);

/* ---------------------------------------------------------------- generation */

typedef struct Gen
{
	Seed	   *seeds;
	int			nseeds;
	uint64_t	seed;
} Gen;

void		gen_case(Gen *g, uint64_t index, Case *c);
void		gen_request_id(Rng *r, char out[33]);
void		gen_valid_forecast(Gen *g, Case *c, const char *request_id);

/* ---------------------------------------------------------------- case files */

bool		case_save(const Case *c, const char *path, const char *comment);
bool		case_load(const char *path, Case *c, char *err, size_t errlen);

/* what the server should see in one request, from the bytes we sent */
typedef struct Model
{
	bool		well_framed;	/* a complete, well-formed request: it must be answered */
	bool		incomplete;		/* the server needs bytes that never come */
	bool		bad_framing;	/* complete, but HTTP says to refuse it (400) */
	bool		odd_syntax;		/* unusual but maybe acceptable: answer or close */
	bool		junk_follows;	/* bytes after it are not a request */
	bool		auth_ok;		/* a valid Authorization header is among those sent */
	int			nids;
	Buf			ids[4];			/* X-Request-ID values as sent (surrounding blanks cut) */
	bool		body_known;
	Buf			body;			/* the body the server should store */
	char		message[64];
	char		method[32];
	bool		health;
	bool		not_implemented;	/* an OSCP message this side does not take (501) */
	bool		version_odd;
	bool		headers_may_end;	/* a line the server may take for the end of the headers */
} Model;

/*
 * How a case should go: per connection, how many answers must come (the
 * leading complete, well-formed requests), how many may come (complete
 * requests, odd ones included), and whether to half-close once they are in
 * (its last bytes are not a complete request).
 */
typedef struct Plan
{
	Model		m[MAX_CONN][MAX_REQ];
	int			required[MAX_CONN];
	int			expect[MAX_CONN];
	bool		half_close[MAX_CONN];
} Plan;

int			self_test(Gen *g);	/* the fuzzer's own pieces; returns failures */

/* ---------------------------------------------------------------- the wire */

typedef struct Answer
{
	int			status;			/* 0: none */
	Buf			head;			/* status line and headers */
	Buf			body;
	bool		conn_close;		/* the answer said Connection: close */
	bool		json;			/* Content-Type: application/json */
	char		parse_error[128];
} Answer;

typedef struct ReqOutcome
{
	Answer		answer;
	bool		written;		/* every byte of this request reached the socket */
} ReqOutcome;

typedef struct ConnOutcome
{
	ReqOutcome	req[MAX_REQ];
	int			nanswers;		/* final (non-1xx) answers read */
	bool		refused;		/* connect() failed */
	bool		write_failed;
	bool		eof;			/* the server closed the connection */
	bool		timed_out;		/* a required answer did not come in time */
	bool		hung;			/* still open a while after our half-close */
	bool		waited;			/* waited in vain for an answer that may come */
	int			gave_up_at;		/* answers read when we shut our side first, or -1 */
	Buf			extra;			/* bytes after the last parsable answer */
	int			extra_status[8];	/* answers beyond the requests (to junk) */
	int			nextra;
} ConnOutcome;

typedef struct Target
{
	const char *host;
	int			port;
	const char *token;
	int			answer_timeout_ms;
} Target;

/* the bytes of one request as sent: framing applied, ${TOKEN} expanded */
void		req_serialize(const Req *r, const char *token, Buf *out);
void		conn_outcome_free(ConnOutcome *o);
/* runs every connection of a case as planned */
void		wire_run(const Target *t, const Case *c, const Plan *plan, ConnOutcome *out);
void		req_expand_value(Buf *out, const Buf *v, const char *token);

/* ---------------------------------------------------------------- model and oracles */

void		model_build(const Req *r, const char *token, Model *m);
void		model_free(Model *m);
void		plan_case(const Case *c, const char *token, Plan *plan);
void		plan_free(const Case *c, Plan *plan);

typedef struct Failure
{
	char		oracle[48];		/* short name: 5xx, id-altered, ... */
	char		key[160];		/* groups failures of the same kind */
	Buf			detail;
} Failure;

typedef struct Checker Checker;

Checker    *checker_new(const char *conninfo, const char *log_path, char *err, size_t errlen);
const char *checker_token(Checker *k);
int			checker_worker_pid(Checker *k);
/* checks one executed case; failures appended (returns how many) */
int			checker_case(Checker *k, const Case *c, const Plan *plan, ConnOutcome *o,
						 Failure *f, int maxf, int case_no);
/* server-wide: crash lines in the log, the worker's pid */
int			checker_health(Checker *k, Failure *f, int maxf);
/* end of a campaign: deferred applies done, nothing failed to apply */
int			checker_final(Checker *k, Failure *f, int maxf, int timeout_s);
void		checker_free(Checker *k);
void		failure_free(Failure *f);

#endif
