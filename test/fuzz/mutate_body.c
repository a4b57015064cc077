/*
 * mutate_body.c — mutations of a request body: its JSON structure and values
 * (through jansson), and its bytes (invalid UTF-8, NUL, truncation, ...).
 *
 * Values that jansson cannot write (numbers like 1e400, invalid UTF-8 inside
 * a string, deep nesting) are put in as markers, then replaced by their raw
 * bytes in the written text.
 */
#include "fuzz.h"
#include "mutate.h"
#include "timestamps.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------------- raw markers */

typedef struct Raw
{
	char		marker[24];
	Buf			bytes;
	bool		in_string;		/* replaces the marker inside a string, not the whole string */
} Raw;

typedef struct Doc
{
	json_t	   *root;
	Raw			raw[8];
	int			nraw;
} Doc;

static json_t *
raw_value(Doc *d, const void *p, size_t n)
{
	Raw		   *x = &d->raw[d->nraw < 7 ? d->nraw++ : 7];

	snprintf(x->marker, sizeof(x->marker), "@@RAW%d@@", (int) (x - d->raw));
	buf_set(&x->bytes, p, n);
	x->in_string = false;
	return json_string(x->marker);
}

/* a string holding raw bytes somewhere inside: prefix + bytes + suffix */
static json_t *
raw_in_string(Doc *d, const char *prefix, const void *p, size_t n, const char *suffix)
{
	Raw		   *x = &d->raw[d->nraw < 7 ? d->nraw++ : 7];
	char		s[512];

	snprintf(x->marker, sizeof(x->marker), "@@IN%d@@", (int) (x - d->raw));
	buf_set(&x->bytes, p, n);
	x->in_string = true;
	snprintf(s, sizeof(s), "%.200s%s%.200s", prefix, x->marker, suffix);
	return json_string(s);
}

static void
doc_write(Doc *d, Buf *out)
{
	char	   *text = json_dumps(d->root, JSON_COMPACT | JSON_ENCODE_ANY);
	Buf			b = {0};

	buf_sets(&b, text ? text : "");
	free(text);
	for (int i = 0; i < d->nraw; i++)
	{
		Raw		   *x = &d->raw[i];
		char		quoted[32];
		const char *m = x->marker;
		long		at;

		if (!x->in_string)
		{
			snprintf(quoted, sizeof(quoted), "\"%s\"", x->marker);
			m = quoted;
		}
		if ((at = buf_find(&b, 0, m)) >= 0)
		{
			buf_cut(&b, (size_t) at, strlen(m));
			buf_insert(&b, (size_t) at, x->bytes.p, x->bytes.len);
		}
		buf_free(&x->bytes);
	}
	buf_copy(out, &b);
	buf_free(&b);
	json_decref(d->root);
	d->root = NULL;
}

/* ---------------------------------------------------------------- walking the tree */

typedef struct Node
{
	json_t	   *parent;			/* NULL: the root */
	const char *key;			/* in an object */
	size_t		index;			/* in an array */
	json_t	   *v;
} Node;

typedef struct Nodes
{
	Node	   *n;
	int			len;
	int			cap;
} Nodes;

static void
collect(json_t *parent, const char *key, size_t index, json_t *v, Nodes *out, int depth)
{
	if (out->len == out->cap)
	{
		out->cap = out->cap ? out->cap * 2 : 64;
		out->n = realloc(out->n, sizeof(Node) * (size_t) out->cap);
	}
	out->n[out->len++] = (Node) {parent, key, index, v};
	if (depth > 64)
		return;
	if (json_is_object(v))
	{
		const char *k;
		json_t	   *c;

		json_object_foreach(v, k, c)
			collect(v, k, 0, c, out, depth + 1);
	}
	else if (json_is_array(v))
	{
		size_t		i;
		json_t	   *c;

		json_array_foreach(v, i, c)
			collect(v, NULL, i, c, out, depth + 1);
	}
}

static void
node_replace(Doc *d, Node *n, json_t *nv)
{
	if (n->parent == NULL)
	{
		json_decref(d->root);
		d->root = nv;
	}
	else if (n->key)
		json_object_set_new(n->parent, n->key, nv);
	else
		json_array_set_new(n->parent, n->index, nv);
}

/* every node whose key is `key` */
static int
nodes_named(Nodes *all, const char *key, Node **out, int max)
{
	int			k = 0;

	for (int i = 0; i < all->len && k < max; i++)
		if (all->n[i].key && strcmp(all->n[i].key, key) == 0)
			out[k++] = &all->n[i];
	return k;
}

/* ---------------------------------------------------------------- value stock */

static json_t *
random_value(Rng *r)
{
	switch (rng_below(r, 12))
	{
		case 0:
			return json_null();
		case 1:
			return json_true();
		case 2:
			return json_false();
		case 3:
			return json_integer(0);
		case 4:
			return json_integer(-1);
		case 5:
			return json_real(1.5);
		case 6:
			return json_string("");
		case 7:
			return json_string("x");
		case 8:
			return json_array();
		case 9:
			return json_object();
		case 10:
			return json_pack("[i,s]", 1, "a");
		default:
			return json_pack("{s:s}", "group_id", "nested");
	}
}

static const char *const odd_numbers[] = {
	"-0", "0", "0.0", "1e308", "1e400", "-1e400", "1E-400", "0.0000000000000000000001",
	"123456789012345678901234567890123456789", "1.0", "1e2", "1E+2", "-1", "01", "+1", ".5",
	"1.", "NaN", "Infinity", "-Infinity", "0x10", "1_000", "1e", "--1", "1e-2147483649",
	"1e99999999999", "99999999999999999999999999999999999999999999999999e99999", "-0.0e-0",
	"100.000000000000000000000000000001", "4.9e-324", "1.7976931348623157e308", "2e131072",
	"1e-16384", "0e0", "-", "1 2", "\"100\"", "true", "null", "[100]",
};

static const char *const enum_values[] = {
	"CONSUMPTION", "GENERATION", "FALLBACK_CONSUMPTION", "FALLBACK_GENERATION", "OPTIMUM",
	"consumption", "KW", "kw", "A", "W", "WH", "KWH", "ALL", "ONE", "TWO", "THREE", "UNKNOWN",
	"all", "KW ", " KW", "", "K\xc3\x9c", "\xe5\x8d\x83\xe7\x93\xa6", "CONSUMPTION\t",
};

/* byte sequences that are not UTF-8 */
static const char *const bad_utf8[] = {
	"\x80", "\xbf", "\xc0\xaf", "\xc1\xbf", "\xe0\x80\xaf", "\xed\xa0\x80", "\xed\xbf\xbf",
	"\xf4\x90\x80\x80", "\xf5\x80\x80\x80", "\xf8\x88\x80\x80\x80", "\xfc\x84\x80\x80\x80\x80",
	"\xfe", "\xff", "\xc3", "\xe6\x97", "\xf0\x9f\x98", "\xc3\x28", "\xe2\x28\xa1", "\xa0\xa1",
};

/* JSON escapes PostgreSQL may refuse or mishandle, and some it must take */
static const char *const odd_escapes[] = {
	"\\u0000", "\\ud800", "\\udc00", "\\ud800\\u0041", "\\udbff\\udfff", "\\u001f", "\\u007f",
	"\\u00e9", "\\u2028", "\\ufeff", "\\uffff", "\\\"", "\\\\", "\\/", "\\x41", "\\U0041", "\\u12",
	"\\", "\\a",
};

/* the group_id: long, empty, odd characters */
static json_t *
odd_group_id(Doc *d, Rng *r, Buf *log)
{
	static const int lens[] = {63, 64, 65, 100, 255, 256, 257, 1000, 2000, 2600, 2700, 2800, 4000,
	8000, 8191, 8192, 8200, 20000, 100000, 300000};
	static const char *const fixed[] = {
		"", " ", "\t", "B6734_AE0100_00848821001 ", " B6734_AE0100_00848821001", "a'b", "a\"b",
		"a\\b", "a%sb", "'); DROP TABLE capacity_forecast; --", "\xf0\x9f\x94\x8c\xe5\x85\x85\xe9\x9b\xbb",
		"line\nbreak", "tab\there", "\x7f", "../../etc/passwd", "null", "0", "$1", "${TOKEN}",
		"\xe2\x80\xae" "evil",
	};
	int			k = (int) rng_below(r, 10);

	if (k < 5)
	{
		int			n = PICK(r, lens);
		bool		wide = rng_chance(r, 30);	/* 3-byte characters: bytes != characters */
		Buf			b = {0};
		json_t	   *v;

		/* random characters: a repeated pattern would be compressed, and fit where these do not */
		for (int i = 0; i < n; i++)
		{
			if (wide)
			{
				unsigned	cp = 0x4E00 + rng_below(r, 0x5200);	/* CJK ideographs */

				buf_addc(&b, 0xE0 | (cp >> 12));
				buf_addc(&b, 0x80 | ((cp >> 6) & 0x3F));
				buf_addc(&b, 0x80 | (cp & 0x3F));
			}
			else
				buf_addc(&b, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_"[rng_below(r, 63)]);
		}
		buf_addf(log, "group_id %d %s; ", n, wide ? "3-byte characters" : "ASCII characters");
		v = json_stringn((const char *) b.p, b.len);
		buf_free(&b);
		return v;
	}
	if (k < 8)
	{
		const char *s = PICK(r, fixed);

		buf_addf(log, "group_id \"%s\"; ", preview((const unsigned char *) s, strlen(s), 40));
		return json_string(s);
	}
	if (k < 9)
	{
		const char *s = PICK(r, bad_utf8);

		buf_addf(log, "group_id with invalid UTF-8 %s; ", preview((const unsigned char *) s, strlen(s), 20));
		return raw_in_string(d, "G", s, strlen(s), "1");
	}
	{
		const char *s = PICK(r, odd_escapes);

		buf_addf(log, "group_id with escape %s; ", s);
		return raw_in_string(d, "G", s, strlen(s), "1");
	}
}

static void
deep_bytes(Rng *r, Buf *out, int depth, Buf *log)
{
	int			shape = (int) rng_below(r, 4);

	for (int i = 0; i < depth; i++)
		buf_adds(out, shape == 1 ? "{\"a\":" : "[");
	if (shape == 3)
	{
		buf_addf(log, "nested %d deep, never closed; ", depth);
		return;
	}
	buf_adds(out, "1");
	for (int i = 0; i < depth; i++)
		buf_adds(out, shape == 1 ? "}" : "]");
	buf_addf(log, "nested %d deep (%s); ", depth, shape == 1 ? "objects" : "arrays");
}

static int
pick_depth(Rng *r)
{
	static const int depths[] = {64, 100, 1000, 3000, 5000, 10000, 20000, 50000, 100000, 200000};

	return PICK(r, depths);
}

/* ---------------------------------------------------------------- timestamps */

/* re-express every block time in another valid form, same instants */
static bool
retime(Doc *d, Nodes *all, Rng *r, Buf *log)
{
	Node	   *ts[8192];
	int			n = nodes_named(all, "start_time", ts, 4096);
	static const int offsets[] = {0, 480, -300, 330, 345, 840, -720, 60, -60, 1439, -1439};
	int			off = PICK(r, offsets);
	int			fd = (int) rng_below(r, 10);
	char		sep = rng_chance(r, 80) ? 'T' : rng_chance(r, 50) ? 't' : ' ';
	bool		z = rng_chance(r, 50);
	int64_t		shift = 0;

	n += nodes_named(all, "end_time", ts + n, 4096);
	if (n == 0)
		return false;
	if (rng_chance(r, 50))
		shift = (int64_t) ((int) rng_below(r, 40) - 8) * 86400 * 1000000;
	for (int i = 0; i < n; i++)
	{
		const char *s = json_string_value(ts[i]->v);
		int64_t		us;
		char		out[64];

		if (s == NULL || !rfc3339_parse((const unsigned char *) s, strlen(s), &us))
			continue;
		rfc3339_format(out, sizeof(out), us + shift, off, fd, sep, z);
		if (sep == 't' && z)
			for (char *p = out; *p; p++)
				if (*p == 'Z')
					*p = 'z';
		node_replace(d, ts[i], json_string(out));
	}
	buf_addf(log, "times re-expressed (offset %+d min, %d fraction digits, '%c'%s, %+lld days); ",
			 off, fd, sep, z ? ", Z" : "", (long long) (shift / 86400000000LL));
	return true;
}

static bool
odd_time(Doc *d, Nodes *all, Rng *r, Buf *log)
{
	Node	   *ts[8192];
	int			n = nodes_named(all, rng_chance(r, 50) ? "start_time" : "end_time", ts, 8192);
	const char *s;
	char		date[11] = "2026-11-26",
				out[160];

	if (n == 0)
		return false;
	{
		Node	   *t = ts[rng_below(r, (uint32_t) n)];

		s = json_string_value(t->v);
		if (s == NULL)
			s = "";
		if (strlen(s) >= 10)
			snprintf(date, sizeof(date), "%.10s", s);
		timestamp_mutation(r, s, date, out, sizeof(out));
		buf_addf(log, "%s \"%s\"; ", t->key, preview((const unsigned char *) out, strlen(out), 80));
		node_replace(d, t, json_string(out));
	}
	return true;
}

/* ---------------------------------------------------------------- structure */

static bool
blocks_mutation(Nodes *all, Rng *r, Buf *log)
{
	Node	   *b[1];
	json_t	   *arr;
	size_t		n;

	if (nodes_named(all, "forecasted_blocks", b, 1) == 0 || !json_is_array(b[0]->v))
		return false;
	arr = b[0]->v;
	n = json_array_size(arr);
	switch (rng_below(r, 7))
	{
		case 0:
			json_array_clear(arr);
			buf_adds(log, "no blocks; ");
			break;
		case 1:
			if (n)
				json_array_remove(arr, rng_below(r, (uint32_t) n));
			buf_adds(log, "one block removed; ");
			break;
		case 2:
			if (n)
				json_array_append_new(arr, json_deep_copy(json_array_get(arr, rng_below(r, (uint32_t) n))));
			buf_adds(log, "one block repeated; ");
			break;
		case 3:
			for (size_t i = 0; i < n / 2; i++)
			{
				json_t	   *a = json_incref(json_array_get(arr, i));

				json_array_set(arr, i, json_array_get(arr, n - 1 - i));
				json_array_set_new(arr, n - 1 - i, a);
			}
			buf_adds(log, "blocks reversed; ");
			break;
		case 4:
			{
				/* many hourly blocks continuing the last one */
				static const int counts[] = {25, 48, 100, 500, 1000, 3000};
				int			want = PICK(r, counts);
				json_t	   *last = n ? json_array_get(arr, n - 1) : NULL;
				const char *e = last ? json_string_value(json_object_get(last, "end_time")) : NULL;
				int64_t		us;

				if (e == NULL || !rfc3339_parse((const unsigned char *) e, strlen(e), &us))
					return false;
				for (int i = (int) n; i < want; i++)
				{
					json_t	   *blk = json_deep_copy(last);
					char		s1[64],
								s2[64];

					rfc3339_format(s1, sizeof(s1), us, 480, 3, 'T', false);
					us += 3600LL * 1000000;
					rfc3339_format(s2, sizeof(s2), us, 480, 3, 'T', false);
					json_object_set_new(blk, "start_time", json_string(s1));
					json_object_set_new(blk, "end_time", json_string(s2));
					json_array_append_new(arr, blk);
				}
				buf_addf(log, "%d hourly blocks; ", want);
			}
			break;
		case 5:
			{
				/* a block's key removed or retyped */
				static const char *const keys[] = {"capacity", "phase", "unit", "start_time", "end_time"};
				json_t	   *blk = n ? json_array_get(arr, rng_below(r, (uint32_t) n)) : NULL;
				const char *k = PICK(r, keys);

				if (!json_is_object(blk))
					return false;
				if (rng_chance(r, 50))
					json_object_del(blk, k);
				else
					json_object_set_new(blk, k, random_value(r));
				buf_addf(log, "a block's %s removed or retyped; ", k);
			}
			break;
		default:
			{
				/* blocks that end before they start, or are zero long */
				json_t	   *blk = n ? json_array_get(arr, rng_below(r, (uint32_t) n)) : NULL;
				json_t	   *s;

				if (!json_is_object(blk) || (s = json_object_get(blk, "start_time")) == NULL)
					return false;
				if (rng_chance(r, 50))
					json_object_set(blk, "end_time", s);
				else
				{
					json_t	   *e = json_incref(json_object_get(blk, "end_time"));

					json_object_set(blk, "end_time", s);
					json_object_set_new(blk, "start_time", e ? e : json_null());
				}
				buf_adds(log, "a block zero long or backwards; ");
			}
	}
	return true;
}

/* ---------------------------------------------------------------- JSON mutations */

typedef enum JsonMut
{
	JM_DROP_KEY, JM_ADD_KEY, JM_RETYPE, JM_GROUP_ID, JM_TIME, JM_RETIME, JM_NUMBER, JM_BLOCKS,
	JM_ENUM, JM_DEEP, JM_HUGE_STRING, JM_ESCAPE, JM_BAD_UTF8_IN_STRING, JM_NUL_IN_STRING,
	JM_COUNT
} JsonMut;

static const int json_weights[JM_COUNT] = {
	[JM_DROP_KEY] = 6, [JM_ADD_KEY] = 5, [JM_RETYPE] = 8, [JM_GROUP_ID] = 10, [JM_TIME] = 14,
	[JM_RETIME] = 8, [JM_NUMBER] = 8, [JM_BLOCKS] = 8, [JM_ENUM] = 5, [JM_DEEP] = 5,
	[JM_HUGE_STRING] = 3, [JM_ESCAPE] = 5, [JM_BAD_UTF8_IN_STRING] = 6,
	[JM_NUL_IN_STRING] = 3,
};

static JsonMut
pick_json(Rng *r)
{
	int			total = 0,
				x;

	for (int i = 0; i < JM_COUNT; i++)
		total += json_weights[i];
	x = (int) rng_below(r, (uint32_t) total);
	for (int i = 0; i < JM_COUNT; i++)
		if ((x -= json_weights[i]) < 0)
			return (JsonMut) i;
	return JM_RETYPE;
}

/* a random string node, or NULL */
static Node *
some_string(Nodes *all, Rng *r)
{
	int			k = 0;
	Node	   *pick = NULL;

	for (int i = 0; i < all->len; i++)
		if (json_is_string(all->n[i].v) && rng_below(r, (uint32_t) ++k) == 0)
			pick = &all->n[i];
	return pick;
}

static bool
json_mutation(Doc *d, Rng *r, Buf *log)
{
	Nodes		all = {0};
	Node	   *n;
	bool		ok = true;
	JsonMut		m = pick_json(r);

	collect(NULL, NULL, 0, d->root, &all, 0);
	n = &all.n[rng_below(r, (uint32_t) all.len)];
	switch (m)
	{
		case JM_DROP_KEY:
			if (n->key == NULL)
				ok = false;
			else
			{
				buf_addf(log, "key \"%s\" removed; ", n->key);
				json_object_del(n->parent, n->key);
			}
			break;
		case JM_ADD_KEY:
			{
				Node	   *o = NULL;

				for (int i = 0; i < all.len; i++)
					if (json_is_object(all.n[i].v) && (o == NULL || rng_chance(r, 30)))
						o = &all.n[i];
				if (o == NULL)
					ok = false;
				else
				{
					json_object_set_new(o->v, rng_chance(r, 50) ? "unknown_field" : "\xe6\x9c\xaa\xe7\x9f\xa5",
										random_value(r));
					buf_adds(log, "unknown key added; ");
				}
			}
			break;
		case JM_RETYPE:
			buf_addf(log, "%s%s%s retyped; ", n->key ? "\"" : "", n->key ? n->key : "a value",
					 n->key ? "\"" : "");
			node_replace(d, n, random_value(r));
			break;
		case JM_GROUP_ID:
			{
				Node	   *g[1];

				if (nodes_named(&all, "group_id", g, 1) == 0 && nodes_named(&all, "token", g, 1) == 0)
					ok = false;
				else
					node_replace(d, g[0], odd_group_id(d, r, log));
			}
			break;
		case JM_TIME:
			ok = odd_time(d, &all, r, log);
			break;
		case JM_RETIME:
			ok = retime(d, &all, r, log);
			break;
		case JM_NUMBER:
			{
				Node	   *c[4096];
				int			k = nodes_named(&all, "capacity", c, 4096);
				const char *num = PICK(r, odd_numbers);

				if (k == 0)
					ok = false;
				else
				{
					node_replace(d, c[rng_below(r, (uint32_t) k)], raw_value(d, num, strlen(num)));
					buf_addf(log, "capacity %s; ", num);
				}
			}
			break;
		case JM_BLOCKS:
			ok = blocks_mutation(&all, r, log);
			break;
		case JM_ENUM:
			{
				static const char *const keys[] = {"type", "unit", "phase", "version", "base_url"};
				Node	   *e[4096];
				const char *key = PICK(r, keys);
				int			k = nodes_named(&all, key, e, 4096);
				const char *v = PICK(r, enum_values);

				if (k == 0)
					ok = false;
				else
				{
					node_replace(d, e[rng_below(r, (uint32_t) k)], json_string(v));
					buf_addf(log, "%s \"%s\"; ", key, preview((const unsigned char *) v, strlen(v), 30));
				}
			}
			break;
		case JM_DEEP:
			{
				Buf			b = {0};

				deep_bytes(r, &b, pick_depth(r), log);
				node_replace(d, n, raw_value(d, b.p, b.len));
				buf_free(&b);
			}
			break;
		case JM_HUGE_STRING:
			{
				static const int lens[] = {10000, 100000, 500000, 1000000, 1100000};
				int			len = PICK(r, lens);
				char	   *s = malloc((size_t) len + 1);

				memset(s, 'x', (size_t) len);
				s[len] = '\0';
				node_replace(d, n, json_string(s));
				free(s);
				buf_addf(log, "a %d-character string; ", len);
			}
			break;
		case JM_ESCAPE:
		case JM_BAD_UTF8_IN_STRING:
		case JM_NUL_IN_STRING:
			{
				Node	   *s = some_string(&all, r);
				const char *bytes = m == JM_ESCAPE ? PICK(r, odd_escapes) :
					m == JM_BAD_UTF8_IN_STRING ? PICK(r, bad_utf8) : NULL;
				size_t		blen = bytes ? strlen(bytes) : 1;
				const char *old;
				size_t		at;
				char		pre[256],
							post[256];

				if (s == NULL)
				{
					ok = false;
					break;
				}
				old = json_string_value(s->v);
				at = rng_below(r, (uint32_t) strlen(old) + 1);
				snprintf(pre, sizeof(pre), "%.*s", (int) (at > 200 ? 200 : at), old);
				snprintf(post, sizeof(post), "%.200s", old + at);
				node_replace(d, s, raw_in_string(d, pre, bytes ? bytes : "", blen, post));
				buf_addf(log, "%s in %s; ",
						 m == JM_ESCAPE ? bytes : m == JM_NUL_IN_STRING ? "NUL byte" : "invalid UTF-8",
						 s->key ? s->key : "a string");
			}
			break;
		default:
			ok = false;
	}
	free(all.n);
	return ok;
}

/* ---------------------------------------------------------------- byte mutations */

static void
byte_mutation(Req *q, Rng *r, Buf *log)
{
	Buf		   *b = &q->body;
	size_t		at = rng_below(r, (uint32_t) b->len + 1);

	switch (rng_below(r, 13))
	{
		case 0:
			{
				const char *s = PICK(r, bad_utf8);

				buf_insert(b, at, s, strlen(s));
				buf_addf(log, "invalid UTF-8 %s at byte %zu; ", preview((const unsigned char *) s, strlen(s), 20), at);
			}
			break;
		case 1:
			{
				static const size_t where[] = {0, 1};
				size_t		pos = rng_chance(r, 30) ? b->len : rng_chance(r, 20) ? PICK(r, where) : at;

				buf_insert(b, pos, "\0", 1);
				buf_addf(log, "NUL byte at %zu of %zu; ", pos, b->len - 1);
			}
			break;
		case 2:
			for (int i = 0, n = 1 + (int) rng_below(r, 4); i < n && b->len; i++)
				b->p[rng_below(r, (uint32_t) b->len)] ^= (unsigned char) (1u << rng_below(r, 8));
			buf_adds(log, "bits flipped; ");
			break;
		case 3:
			b->len = at;
			buf_addf(log, "body cut at %zu; ", at);
			break;
		case 4:
			{
				static const char *const tails[] = {"x", "}", "{}", " ", "\n", "\r\n", ",", "]",
				"\0", "{\"group_id\":\"again\"}", "// comment", "\xef\xbb\xbf"};
				const char *t = PICK(r, tails);
				size_t		n = t[0] ? strlen(t) : 1;

				buf_add(b, t, n);
				buf_addf(log, "%s after the JSON; ", preview((const unsigned char *) t, n, 20));
			}
			break;
		case 5:
			{
				static const char *const heads[] = {"\xef\xbb\xbf", " ", "\n\t ", "\xfe\xff", "\0"};
				const char *h = PICK(r, heads);
				size_t		n = h[0] ? strlen(h) : 1;

				buf_insert(b, 0, h, n);
				buf_addf(log, "%s before the JSON; ", preview((const unsigned char *) h, n, 20));
			}
			break;
		case 6:
			{
				static const char *const whole[] = {"", "null", "[]", "{}", "\"str\"", "0", "true",
				" ", "{", "[{}]", "{\"\":\"\"}", "\xef\xbb\xbf{}", "{}\0{}"};
				const char *w = PICK(r, whole);
				size_t		n = strlen(w);

				if (strcmp(w, "{}") == 0 && rng_chance(r, 30))
					n = 5;		/* "{}\0{}" */
				buf_set(b, w, n);
				buf_addf(log, "body %s; ", preview((const unsigned char *) w, n, 20));
			}
			break;
		case 7:
			{
				Buf			deep = {0};

				deep_bytes(r, &deep, pick_depth(r), log);
				buf_copy(b, &deep);
				buf_free(&deep);
			}
			break;
		case 8:
			{
				/* a duplicated key: the first one is a different value */
				static const char *const dup[] = {"\"group_id\":\"FIRST\",", "\"type\":\"GENERATION\",",
				"\"forecasted_blocks\":[],", "\"token\":\"first\",", "\"group_id\":null,"};
				const char *s = PICK(r, dup);

				if (b->len && b->p[0] == '{')
					buf_insert(b, 1, s, strlen(s));
				buf_addf(log, "duplicate key %s; ", s);
			}
			break;
		case 9:
			{
				/* a random byte inserted */
				unsigned char c = (unsigned char) rng_below(r, 256);

				buf_insert(b, at, &c, 1);
				buf_addf(log, "byte 0x%02X inserted at %zu; ", c, at);
			}
			break;
		case 10:
			{
				size_t		n = rng_below(r, 64) + 1;

				buf_cut(b, at, n);
				buf_addf(log, "%zu bytes removed at %zu; ", n, at);
			}
			break;
		case 11:
			{
				/* a valid multi-byte character in the middle of a number or key */
				static const char *const mb[] = {"\xc3\xa9", "\xe2\x80\xa8", "\xf0\x9f\x98\x80", "\xef\xbf\xbe",
				"\xc2\xa0"};
				const char *s = PICK(r, mb);

				buf_insert(b, at, s, strlen(s));
				buf_addf(log, "character %s at %zu; ", preview((const unsigned char *) s, strlen(s), 20), at);
			}
			break;
		default:
			{
				/* a range repeated */
				size_t		n = rng_below(r, 200) + 1;

				if (at + n > b->len)
					n = b->len - at;
				{
					Buf			tmp = {0};

					buf_add(&tmp, b->p + at, n);
					buf_insert(b, at, tmp.p, tmp.len);
					buf_free(&tmp);
				}
				buf_addf(log, "%zu bytes repeated at %zu; ", n, at);
			}
	}
}

void
mutate_body(Req *q, Rng *r, Buf *log)
{
	json_error_t err;
	Doc			d = {0};

	if (rng_chance(r, 70))
	{
		d.root = json_loadb((const char *) q->body.p, q->body.len, JSON_DECODE_ANY, &err);
		if (d.root)
		{
			if (json_mutation(&d, r, log))
			{
				doc_write(&d, &q->body);
				return;
			}
			for (int i = 0; i < d.nraw; i++)
				buf_free(&d.raw[i].bytes);
			json_decref(d.root);
		}
	}
	byte_mutation(q, r, log);
}
