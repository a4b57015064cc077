/*
 * wire.c — a case over real sockets: every connection opened at once,
 * written all at once, request by request (keep-alive) or slowly, and read
 * with poll() until each request that must be answered is, then half-closed
 * where the last bytes were not a complete request, and read to the end.
 */
#define _GNU_SOURCE
#include "fuzz.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/*
 * After our half-close, how long the server has to answer or close.  Not
 * closing is no failure (the server's receive timeout does it later), so the
 * wait is short: such cases are common.
 */
#define HALF_CLOSE_WAIT_MS 20

/*
 * How long answers that may come (to complete but odd requests) are waited
 * for before our half-close: a server library may take a half-close as the
 * client giving up, and drop an answer it was about to send.
 */
#define GRACE_MS 500

static int64_t
now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

typedef struct Live
{
	int			fd;
	Buf			out;			/* every byte this connection will send */
	size_t		req_end[MAX_REQ];	/* end offset of each request in out */
	size_t		limit;			/* bytes allowed so far (sequential, slow) */
	size_t		wpos;
	Buf			in;
	size_t		rpos;			/* parsed up to here */
	int			required;		/* answers that must come */
	int			expect;			/* answers that may come */
	int64_t		grace;			/* until when the ones that may come are waited for */
	bool		half_close;		/* shut our side once the required answers are in */
	bool		shut;
	bool		done;
	bool		closing;		/* an answer said Connection: close */
	bool		sequential;		/* next request only once the previous one is answered */
	int64_t		deadline;
	int64_t		next_piece;
	int			piece;
	bool		head_only[MAX_REQ];	/* HEAD: no body in the answer */
} Live;

void
conn_outcome_free(ConnOutcome *o)
{
	for (int i = 0; i < MAX_REQ; i++)
	{
		buf_free(&o->req[i].answer.head);
		buf_free(&o->req[i].answer.body);
	}
	buf_free(&o->extra);
}

static bool
header_value(const unsigned char *head, size_t n, const char *name, char *out, size_t size)
{
	size_t		nl = strlen(name);

	for (size_t i = 0; i + nl + 1 < n; i++)
	{
		if ((i == 0 || head[i - 1] == '\n') && strncasecmp((const char *) head + i, name, nl) == 0 &&
			head[i + nl] == ':')
		{
			size_t		j = i + nl + 1,
						k = 0;

			while (j < n && (head[j] == ' ' || head[j] == '\t'))
				j++;
			while (j < n && head[j] != '\r' && head[j] != '\n' && k + 1 < size)
				out[k++] = (char) head[j++];
			out[k] = '\0';
			return true;
		}
	}
	return false;
}

/*
 * One answer from in[*pos]: true when complete (a 1xx is consumed and
 * reported with status < 200).  At EOF a body without length ends there.
 */
static bool
parse_answer(Live *l, bool eof, bool head_only, Answer *a)
{
	const unsigned char *p = l->in.p + l->rpos;
	size_t		n = l->in.len - l->rpos;
	long		hend = -1;
	char		v[128];
	size_t		blen = 0;
	bool		chunked = false,
				has_len = false;

	for (size_t i = 0; i + 3 < n; i++)
		if (p[i] == '\r' && p[i + 1] == '\n' && p[i + 2] == '\r' && p[i + 3] == '\n')
		{
			hend = (long) i + 4;
			break;
		}
	if (hend < 0)
		return false;
	memset(a, 0, sizeof(*a));
	buf_set(&a->head, p, (size_t) hend);
	if (hend < 12 || memcmp(p, "HTTP/1.", 7) != 0 || p[8] != ' ' ||
		sscanf((const char *) p + 9, "%3d", &a->status) != 1 || a->status < 100 || a->status > 599)
	{
		snprintf(a->parse_error, sizeof(a->parse_error), "not an HTTP/1.x status line: %s",
				 preview(p, (size_t) hend > 40 ? 40 : (size_t) hend, 40));
		if (a->status < 100 || a->status > 599)
			a->status = 999;
	}
	if (header_value(p, (size_t) hend, "Connection", v, sizeof(v)) && strcasestr(v, "close"))
		a->conn_close = true;
	if (header_value(p, (size_t) hend, "Content-Type", v, sizeof(v)) &&
		strncasecmp(v, "application/json", 16) == 0)
		a->json = true;
	if (header_value(p, (size_t) hend, "Transfer-Encoding", v, sizeof(v)) && strcasestr(v, "chunked"))
		chunked = true;
	if (header_value(p, (size_t) hend, "Content-Length", v, sizeof(v)))
	{
		has_len = true;
		blen = strtoul(v, NULL, 10);
	}
	if (a->status < 200 || a->status == 204 || a->status == 304 || head_only)
	{
		l->rpos += (size_t) hend;
		return true;
	}
	if (chunked)
	{
		size_t		i = (size_t) hend;

		for (;;)
		{
			char	   *end;
			unsigned long sz;
			size_t		lend = i;

			while (lend + 1 < n && !(p[lend] == '\r' && p[lend + 1] == '\n'))
				lend++;
			if (lend + 1 >= n)
				return false;
			sz = strtoul((const char *) p + i, &end, 16);
			i = lend + 2;
			if (sz == 0)
			{
				if (i + 1 >= n)
					return false;
				i += 2;			/* no trailers expected */
				break;
			}
			if (i + sz + 2 > n)
				return false;
			buf_add(&a->body, p + i, sz);
			i += sz + 2;
		}
		l->rpos += i;
		return true;
	}
	if (has_len)
	{
		if ((size_t) hend + blen > n)
			return false;
		buf_set(&a->body, p + hend, blen);
		l->rpos += (size_t) hend + blen;
		return true;
	}
	if (!eof)
		return false;
	buf_set(&a->body, p + hend, n - (size_t) hend);
	l->rpos = l->in.len;
	return true;
}

static void
take_answers(Live *l, ConnOutcome *o, int nreq, bool eof)
{
	Answer		a;

	while (l->rpos < l->in.len)
	{
		int			idx = o->nanswers;
		bool		head = idx < nreq && l->head_only[idx];

		if (!parse_answer(l, eof, head, &a))
			break;
		if (a.status < 200)
		{
			buf_free(&a.head);
			buf_free(&a.body);
			continue;
		}
		if (a.conn_close)
			l->closing = true;
		if (idx < nreq)
		{
			o->req[idx].answer = a;
			if (l->sequential)
				l->limit = idx + 2 < nreq ? l->req_end[idx + 1] : l->out.len;
			if (l->limit > l->out.len)
				l->limit = l->out.len;
		}
		else
		{
			if (o->nextra < 8)
				o->extra_status[o->nextra++] = a.status;
			buf_free(&a.head);
			buf_free(&a.body);
		}
		o->nanswers++;
	}
}

static int
open_conn(const Target *t)
{
	struct sockaddr_in sa;
	int			fd = socket(AF_INET, SOCK_STREAM, 0);
	int			one = 1;

	if (fd < 0)
		return -1;
	memset(&sa, 0, sizeof(sa));
	sa.sin_family = AF_INET;
	sa.sin_port = htons((uint16_t) t->port);
	inet_pton(AF_INET, t->host, &sa.sin_addr);
	if (connect(fd, (struct sockaddr *) &sa, sizeof(sa)) != 0)
	{
		close(fd);
		return -1;
	}
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
	return fd;
}

void
wire_run(const Target *t, const Case *c, const Plan *plan, ConnOutcome *out)
{
	Live		live[MAX_CONN];
	int64_t		start = now_ms();

	memset(live, 0, sizeof(live));
	for (int i = 0; i < c->nconn; i++)
	{
		const Conn *k = &c->conn[i];
		Live	   *l = &live[i];

		memset(&out[i], 0, sizeof(out[i]));
		out[i].gave_up_at = -1;
		buf_add(&l->out, k->prefix.p, k->prefix.len);
		for (int j = 0; j < k->nreq; j++)
		{
			req_serialize(&k->req[j], t->token, &l->out);
			l->req_end[j] = l->out.len;
			l->head_only[j] = strcmp(req_method(&k->req[j]), "HEAD") == 0;
		}
		buf_add(&l->out, k->trailing.p, k->trailing.len);
		if (k->truncate >= 0 && (size_t) k->truncate < l->out.len)
			l->out.len = (size_t) k->truncate;
		l->required = plan->required[i];
		l->expect = plan->expect[i];
		l->half_close = plan->half_close[i];
		l->sequential = k->mode == SEND_SEQUENTIAL && k->nreq > 1;
		l->limit = l->sequential ? l->req_end[0] : l->out.len;
		if (l->limit > l->out.len)
			l->limit = l->out.len;
		if (k->mode == SEND_SLOW)
		{
			l->limit = 0;
			l->next_piece = start;
		}
		l->deadline = start + t->answer_timeout_ms;
		l->fd = open_conn(t);
		if (l->fd < 0)
		{
			out[i].refused = true;
			l->done = true;
		}
	}

	for (;;)
	{
		struct pollfd pfd[MAX_CONN];
		int			np = 0,
					idx[MAX_CONN];
		int64_t		now = now_ms(),
					wake = now + 1000;

		for (int i = 0; i < c->nconn; i++)
		{
			Live	   *l = &live[i];
			const Conn *k = &c->conn[i];

			if (l->done)
				continue;
			if (k->mode == SEND_SLOW && l->limit < l->out.len && now >= l->next_piece)
			{
				int			pieces = k->pieces > 0 ? k->pieces : 1;

				l->piece++;
				l->limit = l->piece >= pieces ? l->out.len : l->out.len * (size_t) l->piece / (size_t) pieces;
				l->next_piece = now + k->delay_ms;
			}
			if (k->mode == SEND_SLOW && l->limit < l->out.len && l->next_piece < wake)
				wake = l->next_piece;
			/*
			 * Every required answer in (or the server said it closes), every
			 * byte written, the answers that may come in or given up on:
			 * finish, or half-close and read to the end.
			 */
			if ((out[i].nanswers >= l->required || l->closing) &&
				(l->wpos >= l->out.len || out[i].write_failed || (l->sequential && l->closing)) && !l->shut)
			{
				if (l->grace == 0 && out[i].nanswers < l->expect && !l->closing)
					l->grace = now + GRACE_MS;
				if (l->grace && now < l->grace && out[i].nanswers < l->expect && !l->closing)
				{
					if (l->grace < wake)
						wake = l->grace;
					goto watch;
				}
				if (l->grace && out[i].nanswers < l->expect)
					out[i].waited = true;
				if (!l->half_close && !l->closing)
				{
					/* requests past those that may be answered: we do not wait for them */
					if (out[i].nanswers < k->nreq)
						out[i].gave_up_at = out[i].nanswers;
					l->done = true;
					continue;
				}
				shutdown(l->fd, SHUT_WR);
				l->shut = true;
				out[i].gave_up_at = out[i].nanswers;
				l->deadline = now + HALF_CLOSE_WAIT_MS;
			}
			if (now >= l->deadline)
			{
				if (l->shut)
					out[i].hung = true;
				else
				{
					out[i].timed_out = true;
					out[i].gave_up_at = out[i].nanswers;
				}
				l->done = true;
				continue;
			}
	watch:
			if (l->deadline < wake)
				wake = l->deadline;
			pfd[np].fd = l->fd;
			pfd[np].events = POLLIN | (l->wpos < l->limit && !out[i].write_failed ? POLLOUT : 0);
			pfd[np].revents = 0;
			idx[np++] = i;
		}
		if (np == 0)
			break;
		if (poll(pfd, (nfds_t) np, (int) (wake > now ? wake - now : 0)) < 0 && errno != EINTR)
			break;
		for (int j = 0; j < np; j++)
		{
			int			i = idx[j];
			Live	   *l = &live[i];
			const Conn *k = &c->conn[i];

			if (pfd[j].revents & POLLOUT)
			{
				ssize_t		w = send(l->fd, l->out.p + l->wpos, l->limit - l->wpos, MSG_NOSIGNAL);

				if (w > 0)
					l->wpos += (size_t) w;
				else if (w < 0 && errno != EAGAIN && errno != EINTR)
				{
					out[i].write_failed = true;
					l->wpos = l->out.len;	/* nothing more will go out */
				}
			}
			if (pfd[j].revents & (POLLIN | POLLHUP | POLLERR))
			{
				unsigned char tmp[65536];
				ssize_t		r = recv(l->fd, tmp, sizeof(tmp), 0);

				if (r > 0)
				{
					buf_add(&l->in, tmp, (size_t) r);
					take_answers(l, &out[i], k->nreq, false);
				}
				else if (r == 0 || (errno != EAGAIN && errno != EINTR))
				{
					take_answers(l, &out[i], k->nreq, true);
					out[i].eof = true;
					l->done = true;
				}
			}
		}
	}

	for (int i = 0; i < c->nconn; i++)
	{
		Live	   *l = &live[i];

		for (int j = 0; j < c->conn[i].nreq; j++)
			out[i].req[j].written = l->wpos >= l->req_end[j] && !out[i].write_failed &&
				l->req_end[j] <= l->out.len;
		if (l->rpos < l->in.len)
			buf_add(&out[i].extra, l->in.p + l->rpos, l->in.len - l->rpos);
		if (l->fd >= 0)
			close(l->fd);
		buf_free(&l->out);
		buf_free(&l->in);
	}
}
