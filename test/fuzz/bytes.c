/*
 * bytes.c — growable byte buffers, a printable escaping for case files and
 * messages, UTF-8 validation, and the random generator (xoshiro256**,
 * seeded through splitmix64 so that a seed and a stream number give one
 * reproducible sequence).
 */
#include "fuzz.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

void
buf_reserve(Buf *b, size_t n)
{
	if (b->len + n + 1 <= b->cap)
		return;
	if (n > ((size_t) 1 << 40))
	{
		fprintf(stderr, "elmo-fuzz: impossible buffer size %zu\n", n);
		abort();
	}
	size_t		cap = b->cap ? b->cap : 64;

	while (cap < b->len + n + 1)
		cap *= 2;
	b->p = realloc(b->p, cap);
	if (b->p == NULL)
	{
		fprintf(stderr, "elmo-fuzz: out of memory\n");
		exit(2);
	}
	b->cap = cap;
}

void
buf_add(Buf *b, const void *p, size_t n)
{
	buf_reserve(b, n);
	if (n)
		memcpy(b->p + b->len, p, n);
	b->len += n;
	b->p[b->len] = '\0';
}

void
buf_adds(Buf *b, const char *s)
{
	buf_add(b, s, strlen(s));
}

void
buf_addc(Buf *b, int c)
{
	unsigned char ch = (unsigned char) c;

	buf_add(b, &ch, 1);
}

void
buf_addf(Buf *b, const char *fmt,...)
{
	va_list		ap;
	int			n;

	va_start(ap, fmt);
	n = vsnprintf(NULL, 0, fmt, ap);
	va_end(ap);
	buf_reserve(b, (size_t) n);
	va_start(ap, fmt);
	vsnprintf((char *) b->p + b->len, (size_t) n + 1, fmt, ap);
	va_end(ap);
	b->len += (size_t) n;
}

void
buf_set(Buf *b, const void *p, size_t n)
{
	b->len = 0;
	buf_add(b, p, n);
}

void
buf_sets(Buf *b, const char *s)
{
	buf_set(b, s, strlen(s));
}

void
buf_copy(Buf *dst, const Buf *src)
{
	buf_set(dst, src->p, src->len);
}

void
buf_insert(Buf *b, size_t at, const void *p, size_t n)
{
	if (at > b->len)
		at = b->len;
	buf_reserve(b, n);
	memmove(b->p + at + n, b->p + at, b->len - at);
	memcpy(b->p + at, p, n);
	b->len += n;
	b->p[b->len] = '\0';
}

void
buf_cut(Buf *b, size_t at, size_t n)
{
	if (at >= b->len)
		return;
	if (n > b->len - at)
		n = b->len - at;
	memmove(b->p + at, b->p + at + n, b->len - at - n);
	b->len -= n;
	b->p[b->len] = '\0';
}

void
buf_free(Buf *b)
{
	free(b->p);
	b->p = NULL;
	b->len = b->cap = 0;
}

bool
buf_eq(const Buf *a, const void *p, size_t n)
{
	return a->len == n && (n == 0 || memcmp(a->p, p, n) == 0);
}

bool
buf_eqs(const Buf *a, const char *s)
{
	return buf_eq(a, s, strlen(s));
}

bool
buf_ieqs(const Buf *a, const char *s)
{
	size_t		n = strlen(s);

	return a->len == n && (n == 0 || strncasecmp((const char *) a->p, s, n) == 0);
}

const char *
buf_cstr(Buf *b)
{
	buf_reserve(b, 0);
	b->p[b->len] = '\0';
	return (const char *) b->p;
}

long
buf_find(const Buf *b, size_t from, const char *needle)
{
	size_t		n = strlen(needle);

	if (b->len < n)
		return -1;
	for (size_t i = from; i + n <= b->len; i++)
		if (memcmp(b->p + i, needle, n) == 0)
			return (long) i;
	return -1;
}

/* ---------------------------------------------------------------- escaping */

static void
escape_one(Buf *out, unsigned char c)
{
	if (c == '\\')
		buf_adds(out, "\\\\");
	else if (c >= 0x20 && c < 0x7f)
		buf_addc(out, c);
	else
		buf_addf(out, "\\x%02X", c);
}

void
escape_bytes(Buf *out, const unsigned char *p, size_t n)
{
	for (size_t i = 0; i < n;)
	{
		size_t		run = 1;

		while (i + run < n && p[i + run] == p[i])
			run++;
		if (run >= 12)
		{
			buf_addf(out, "\\{%zu}", run);
			escape_one(out, p[i]);
		}
		else
			for (size_t k = 0; k < run; k++)
				escape_one(out, p[i]);
		i += run;
	}
}

static int
hexval(int c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* one escaped byte at s[*i]; false when malformed */
static bool
unescape_one(const char *s, size_t n, size_t *i, int *c)
{
	if (s[*i] != '\\')
	{
		*c = (unsigned char) s[(*i)++];
		return true;
	}
	if (*i + 1 < n && s[*i + 1] == '\\')
	{
		*c = '\\';
		*i += 2;
		return true;
	}
	if (*i + 3 < n && s[*i + 1] == 'x' && hexval(s[*i + 2]) >= 0 && hexval(s[*i + 3]) >= 0)
	{
		*c = hexval(s[*i + 2]) * 16 + hexval(s[*i + 3]);
		*i += 4;
		return true;
	}
	return false;
}

bool
unescape_bytes(Buf *out, const char *s, size_t n)
{
	size_t		i = 0;
	int			c;

	while (i < n)
	{
		if (s[i] == '\\' && i + 1 < n && s[i + 1] == '{')
		{
			char	   *end;
			unsigned long run = strtoul(s + i + 2, &end, 10);

			if (*end != '}' || run == 0 || run > 64UL * 1024 * 1024)
				return false;
			i = (size_t) (end - s) + 1;
			if (i >= n || !unescape_one(s, n, &i, &c))
				return false;
			buf_reserve(out, run);
			memset(out->p + out->len, c, run);
			out->len += run;
			out->p[out->len] = '\0';
			continue;
		}
		if (!unescape_one(s, n, &i, &c))
			return false;
		buf_addc(out, c);
	}
	return true;
}

const char *
preview(const unsigned char *p, size_t n, size_t max)
{
	static Buf	tmp;
	static char out[1024];

	if (max >= sizeof(out) - 32)
		max = sizeof(out) - 32;
	tmp.len = 0;
	escape_bytes(&tmp, p, n > max ? max : n);
	if (tmp.len > max)
		tmp.len = max;
	snprintf(out, sizeof(out), "%.*s%s", (int) tmp.len, tmp.p ? (char *) tmp.p : "",
			 n > max || tmp.len == max ? "..." : "");
	if (n > max)
		snprintf(out + strlen(out), 32, " (%zu bytes)", n);
	return out;
}

/* ---------------------------------------------------------------- UTF-8 */

/*
 * Well-formed UTF-8 as Unicode defines it (no overlongs, no surrogates,
 * <= U+10FFFF): -1, or the offset of the first sequence that is not.
 */
long
utf8_invalid_at(const unsigned char *p, size_t n)
{
	size_t		i = 0;

	while (i < n)
	{
		unsigned char c = p[i];
		size_t		k;
		unsigned char lo = 0x80,
					hi = 0xBF;

		if (c < 0x80)
		{
			i++;
			continue;
		}
		if (c >= 0xC2 && c <= 0xDF)
			k = 1;
		else if (c >= 0xE0 && c <= 0xEF)
		{
			k = 2;
			if (c == 0xE0)
				lo = 0xA0;
			if (c == 0xED)
				hi = 0x9F;
		}
		else if (c >= 0xF0 && c <= 0xF4)
		{
			k = 3;
			if (c == 0xF0)
				lo = 0x90;
			if (c == 0xF4)
				hi = 0x8F;
		}
		else
			return (long) i;
		if (i + k >= n)
			return (long) i;
		if (p[i + 1] < lo || p[i + 1] > hi)
			return (long) i;
		for (size_t j = 2; j <= k; j++)
			if (p[i + j] < 0x80 || p[i + j] > 0xBF)
				return (long) i;
		i += k + 1;
	}
	return -1;
}

bool
utf8_valid(const unsigned char *p, size_t n)
{
	return utf8_invalid_at(p, n) < 0;
}

/* ---------------------------------------------------------------- random */

static uint64_t
splitmix64(uint64_t *x)
{
	uint64_t	z = (*x += 0x9E3779B97F4A7C15ULL);

	z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
	z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
	return z ^ (z >> 31);
}

void
rng_seed(Rng *r, uint64_t seed, uint64_t stream)
{
	uint64_t	x = seed ^ (stream * 0xD1B54A32D192ED03ULL);

	for (int i = 0; i < 4; i++)
		r->s[i] = splitmix64(&x);
}

static inline uint64_t
rotl(uint64_t x, int k)
{
	return (x << k) | (x >> (64 - k));
}

uint64_t
rng_next(Rng *r)
{
	uint64_t   *s = r->s;
	uint64_t	result = rotl(s[1] * 5, 7) * 9;
	uint64_t	t = s[1] << 17;

	s[2] ^= s[0];
	s[3] ^= s[1];
	s[1] ^= s[2];
	s[0] ^= s[3];
	s[2] ^= t;
	s[3] = rotl(s[3], 45);
	return result;
}

uint32_t
rng_below(Rng *r, uint32_t n)
{
	if (n == 0)
		return 0;
	return (uint32_t) ((rng_next(r) >> 32) * (uint64_t) n >> 32);
}

bool
rng_chance(Rng *r, int percent)
{
	return (int) rng_below(r, 100) < percent;
}

void
copy_str(char *dst, size_t size, const char *src)
{
	size_t		n = strlen(src);

	if (n >= size)
		n = size - 1;
	memcpy(dst, src, n);
	dst[n] = '\0';
}
