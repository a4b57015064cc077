/*
 * selftest.c — `elmo-fuzz --self-test`: the fuzzer's own pieces checked
 * before they judge the server: the RFC 3339 reader, the UTF-8 check, and
 * case files (a generated case saved and read back sends the same bytes).
 */
#include "fuzz.h"
#include "timestamps.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int	failed;

static void
check(bool ok, const char *what)
{
	if (!ok)
	{
		printf("self-test FAILED: %s\n", what);
		failed++;
	}
}

static void
rfc3339_cases(void)
{
	static const struct
	{
		const char *s;
		int64_t		secs;
		int			micros;
	}			good[] = {
		{"2026-11-26T00:00:00.000+08:00", 1795622400, 0},
		{"2026-11-25T16:00:00Z", 1795622400, 0},
		{"2026-11-25t16:00:00z", 1795622400, 0},
		{"2026-11-25 16:00:00-00:00", 1795622400, 0},
		{"1970-01-01T00:00:00.5Z", 0, 500000},
		{"2000-02-29T12:00:00+08:00", 951796800, 0},
		{"9999-12-31T23:59:59Z", 253402300799, 0},
		{"2016-12-31T23:59:60Z", 1483228800, 0},
		{"0001-01-01T00:00:00+00:00", -62135596800, 0},
		{"1970-01-01T00:00:00.1234567Z", 0, 123457},
	};
	static const char *const bad[] = {
		"2026-11-26T00:00:00 EST+08:00", "2026-11-26T24:00:00.000+08:00", "2026-11-26T00:00:00.000+08:0<",
		"2026-11-26T00:00:00.000 BC+08:00", "2026-11-26T00:00:00000+08:00", "2026-11-26T00:00:00 +08:00",
		"2026-11-26T00:00:00+0800", "2026-11-26T00:00:00", "2026-02-30T00:00:00Z", "2027-02-29T00:00:00Z",
		"2026-11-26T00:00:00.Z", "2026-11-26T00:00:00+24:00", "infinity", "", "2026-11-26T00:00:00Z ",
		"2026-11-26X00:00:00Z",
	};

	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++)
	{
		int64_t		us = 0;
		char		what[160];

		snprintf(what, sizeof(what), "RFC 3339 \"%s\" read as %lld s + %d us", good[i].s,
				 (long long) good[i].secs, good[i].micros);
		check(rfc3339_parse((const unsigned char *) good[i].s, strlen(good[i].s), &us) &&
			  us == good[i].secs * 1000000 + good[i].micros, what);
	}
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
	{
		int64_t		us;
		char		what[160];

		snprintf(what, sizeof(what), "\"%s\" is not RFC 3339", bad[i]);
		check(!rfc3339_parse((const unsigned char *) bad[i], strlen(bad[i]), &us), what);
	}
	{
		/* written, then read back: the same instant */
		char		s[64];
		int64_t		us;

		rfc3339_format(s, sizeof(s), 1795622400123456LL, -330, 6, 'T', false);
		check(strcmp(s, "2026-11-25T10:30:00.123456-05:30") == 0, "RFC 3339 written with an offset");
		check(rfc3339_parse((const unsigned char *) s, strlen(s), &us) && us == 1795622400123456LL,
			  "RFC 3339 written and read back");
	}
}

static void
utf8_cases(void)
{
	check(utf8_valid((const unsigned char *) "caf\xc3\xa9 \xe9\x9b\xbb \xf0\x9f\x98\x80", 14), "valid UTF-8");
	check(!utf8_valid((const unsigned char *) "a\xff", 2), "0xFF is not UTF-8");
	check(!utf8_valid((const unsigned char *) "\xc0\xaf", 2), "an overlong is not UTF-8");
	check(!utf8_valid((const unsigned char *) "\xed\xa0\x80", 3), "a surrogate is not UTF-8");
	check(!utf8_valid((const unsigned char *) "\xf4\x90\x80\x80", 4), "above U+10FFFF is not UTF-8");
	check(!utf8_valid((const unsigned char *) "ab\xe6\x97", 4), "a cut sequence is not UTF-8");
	check(utf8_invalid_at((const unsigned char *) "ab\xe6\x97", 4) == 2, "where UTF-8 stops");
}

/* generated cases (of a few fixed seeds) saved and read back send the same bytes */
static void
casefile_cases(Gen *given)
{
	Gen			gen = *given,
			   *g = &gen;
	char		path[] = "/tmp/elmo-fuzz-selftest-XXXXXX";
	int			fd = mkstemp(path);

	if (fd < 0)
	{
		check(false, "a temporary file");
		return;
	}
	close(fd);
	for (uint64_t i = 0; i < 2000; i++)
	{
		Case		a,
					b;
		char		err[256];

		g->seed = 1 + i / 250;
		gen_case(g, i % 250, &a);
		check(case_save(&a, path, "self-test"), "case saved");
		if (!case_load(path, &b, err, sizeof(err)))
		{
			check(false, err);
			case_free(&a);
			continue;
		}
		check(a.nconn == b.nconn && buf_eq(&a.mutations, b.mutations.p, b.mutations.len), "case read back: layout");
		for (int k = 0; k < a.nconn && k < b.nconn; k++)
		{
			Buf			wa = {0},
						wb = {0};

			check(a.conn[k].nreq == b.conn[k].nreq && a.conn[k].mode == b.conn[k].mode &&
				  a.conn[k].truncate == b.conn[k].truncate, "case read back: connection");
			buf_add(&wa, a.conn[k].prefix.p, a.conn[k].prefix.len);
			buf_add(&wb, b.conn[k].prefix.p, b.conn[k].prefix.len);
			for (int j = 0; j < a.conn[k].nreq && j < b.conn[k].nreq; j++)
			{
				req_serialize(&a.conn[k].req[j], "TOKEN", &wa);
				req_serialize(&b.conn[k].req[j], "TOKEN", &wb);
			}
			buf_add(&wa, a.conn[k].trailing.p, a.conn[k].trailing.len);
			buf_add(&wb, b.conn[k].trailing.p, b.conn[k].trailing.len);
			if (!buf_eq(&wa, wb.p, wb.len))
			{
				char		what[160];

				snprintf(what, sizeof(what), "%s read back sends other bytes", a.name);
				check(false, what);
			}
			buf_free(&wa);
			buf_free(&wb);
		}
		case_free(&a);
		case_free(&b);
	}
	unlink(path);
}

int
self_test(Gen *g)
{
	failed = 0;
	rfc3339_cases();
	utf8_cases();
	casefile_cases(g);
	if (failed == 0)
		printf("ok   self-test (RFC 3339 reader, UTF-8 check, case files)\n");
	return failed;
}
