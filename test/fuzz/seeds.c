/*
 * seeds.c — the starting points: every request the real ELMO sent a CSMS
 * (test/captures/real-elmo-wire: files whose direction is "ELMO -> fake
 * CSMS", in the top directory and its subdirectories), with their request
 * line, headers in captured order and spelling, and raw body.  The captured
 * token becomes ${TOKEN}; Content-Length is dropped (the framing adds it).
 */
#include "fuzz.h"

#include <dirent.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static int
name_cmp(const void *a, const void *b)
{
	return strcmp(((const Seed *) a)->file, ((const Seed *) b)->file);
}

static void
load_one(const char *path, const char *rel, Seed **out, int *n, int *cap)
{
	json_error_t err;
	json_t	   *j = json_load_file(path, JSON_DECODE_ANY | JSON_ALLOW_NUL, &err);
	json_t	   *hs;
	const char *dir;
	Seed	   *s;
	size_t		i;
	json_t	   *h;

	if (j == NULL || !json_is_object(j))
		goto done;
	dir = json_string_value(json_object_get(j, "direction"));
	if (dir == NULL || strcmp(dir, "ELMO -> fake CSMS") != 0)
		goto done;
	if (*n == *cap)
	{
		*cap = *cap ? *cap * 2 : 64;
		*out = realloc(*out, sizeof(Seed) * (size_t) *cap);
	}
	s = &(*out)[(*n)++];
	memset(s, 0, sizeof(*s));
	copy_str(s->file, sizeof(s->file), rel);
	buf_sets(&s->req.line, json_string_value(json_object_get(j, "request_line")));
	hs = json_object_get(j, "headers");
	json_array_foreach(hs, i, h)
	{
		const char *name = json_string_value(json_array_get(h, 0));
		const char *value = json_string_value(json_array_get(h, 1));

		if (name == NULL || value == NULL || strcasecmp(name, "Content-Length") == 0)
			continue;
		if (strcasecmp(name, "Authorization") == 0)
			value = strncmp(value, "Token ", 6) == 0 ? "Token ${TOKEN}" : "${TOKEN}";
		req_header_add(&s->req, name, value, strlen(value));
	}
	{
		json_t	   *rb = json_object_get(j, "raw_body");

		if (json_is_string(rb))
			buf_set(&s->req.body, json_string_value(rb), json_string_length(rb));
	}
	s->req.framing = FR_LENGTH;
done:
	json_decref(j);
}

static void
scan(const char *top, const char *sub, Seed **out, int *n, int *cap)
{
	char		dpath[1024];
	DIR		   *d;
	struct dirent *e;

	snprintf(dpath, sizeof(dpath), "%s%s%s", top, *sub ? "/" : "", sub);
	if ((d = opendir(dpath)) == NULL)
		return;
	while ((e = readdir(d)) != NULL)
	{
		char		path[2048],
					rel[512];
		size_t		len = strlen(e->d_name);

		if (e->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "%s/%s", dpath, e->d_name);
		snprintf(rel, sizeof(rel), "%s%s%s", sub, *sub ? "/" : "", e->d_name);
		if (e->d_type == DT_DIR && *sub == '\0')
			scan(top, e->d_name, out, n, cap);
		else if (len > 5 && strcmp(e->d_name + len - 5, ".json") == 0)
			load_one(path, rel, out, n, cap);
	}
	closedir(d);
}

int
seeds_load(const char *dir, Seed **out)
{
	int			n = 0,
				cap = 0;

	*out = NULL;
	scan(dir, "", out, &n, &cap);
	if (n > 0)
		qsort(*out, (size_t) n, sizeof(Seed), name_cmp);	/* readdir order is not stable */
	return n;
}
