/*
 * elmo-fuzz — a bounded, reproducible fuzzing campaign against the elmo_oscp
 * worker's HTTP listener.  test/fuzz/run.sh sets up the throw-away cluster
 * and calls it; see `elmo-fuzz --help`.
 *
 * Order: the regression cases (every input that once broke something),
 * then CASES generated cases of SEED, then a valid forecast that must still
 * be answered 204 and stored, then the end-of-campaign checks.  Failures of
 * one kind are printed and saved once, counted after that; a crash stops
 * the campaign.  Exit status 1 when anything failed.
 */
#include "fuzz.h"

#include <dirent.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#define MAX_FAIL 64

typedef struct Kind
{
	char		key[200];
	char		oracle[48];
	int			count;
	char		first[96];
	char		saved[512];
} Kind;

typedef struct Known
{
	char		key[200];
	char		reason[600];
	int			count;
} Known;

typedef struct Run
{
	Gen			gen;
	Checker    *checker;
	Target		target;
	const char *save_dir;
	bool		stop_on_failure;
	bool		verbose;
	Kind	   *kinds;
	int			nkinds;
	int			failed_cases;
	Buf			regress_failed;	/* "file: oracles" lines */
	int			slow_cases;		/* took over a second */
	char		last_oracles[256];	/* the oracles the last case failed */
	char		last_known[200];	/* a known defect the last case showed */
	Known	   *known;
	int			nknown;
	int			left_open;		/* connections the server kept open after our half-close */
	int			waited;			/* connections where an answer that may come did not */
	bool		crashed;
} Run;

static double
now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double) ts.tv_sec + ts.tv_nsec / 1e9;
}

static const char *const framing_names[] = {
	"Content-Length", "chunked", "chunked and Content-Length", "no length", "two Content-Lengths",
	"Content-Length text", "broken chunks", "unfinished chunks",
};

static void
describe(const Case *c, ConnOutcome *o, const char *token)
{
	printf("    case: %s\n", c->name);
	printf("    mutations: %s\n", c->mutations.len ? (char *) c->mutations.p : "(none)");
	for (int i = 0; i < c->nconn; i++)
	{
		const Conn *k = &c->conn[i];

		if (c->nconn > 1 || k->nreq > 1 || k->mode != SEND_ALL || k->truncate >= 0)
			printf("    connection %d: %s%s%s\n", i + 1,
				   k->mode == SEND_SLOW ? "slow writes" : k->mode == SEND_SEQUENTIAL ? "keep-alive" : "all at once",
				   k->truncate >= 0 ? ", cut short" : "", k->prefix.len || k->trailing.len ? ", extra bytes" : "");
		for (int j = 0; j < k->nreq; j++)
		{
			const Req  *r = &k->req[j];
			Buf			v = {0};

			printf("      %s\n", preview(r->line.p, r->line.len, 140));
			for (int h = 0; h < r->nh && h < 12; h++)
			{
				req_expand_value(&v, &r->h[h].value, "<token>");
				printf("        %s: ", preview(r->h[h].name.p, r->h[h].name.len, 40));
				printf("%s\n", preview(v.p, v.len, 100));
			}
			if (r->nh > 12)
				printf("        ... %d headers in all\n", r->nh);
			buf_free(&v);
			printf("        [%s%s] body %zu bytes: %s\n", framing_names[r->framing],
				   r->framing == FR_LENGTH && r->cl_delta ? " (off)" : "", r->body.len,
				   preview(r->body.p, r->body.len, 160));
			if (o)
			{
				const Answer *a = &o[i].req[j].answer;

				if (a->status)
					printf("        -> %d %s\n", a->status, preview(a->body.p, a->body.len, 160));
				else
					printf("        -> no answer%s\n", o[i].timed_out ? " (timed out)" :
						   o[i].gave_up_at >= 0 && j >= o[i].gave_up_at ? " (before we hung up)" :
						   o[i].eof ? " (the server closed the connection)" : "");
			}
		}
	}
	(void) token;
}

static void
slug(char *out, size_t size, const char *s)
{
	size_t		j = 0;

	for (; *s && j + 1 < size; s++)
		out[j++] = (*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9') ? *s :
			(*s >= 'A' && *s <= 'Z') ? (char) (*s - 'A' + 'a') : '-';
	out[j] = '\0';
}

static int
known_index(Run *run, const char *key)
{
	for (int i = 0; i < run->nknown; i++)
		if (strcmp(run->known[i].key, key) == 0)
			return i;
	return -1;
}

/* "key<TAB>reason" lines; # comments */
static bool
load_known(Run *run, const char *path)
{
	FILE	   *f = fopen(path, "r");
	char		line[1024];

	if (f == NULL)
		return false;
	while (fgets(line, sizeof(line), f))
	{
		char	   *tab = strchr(line, '\t');
		Known	   *k;

		line[strcspn(line, "\n")] = '\0';
		if (line[0] == '#' || tab == NULL)
			continue;
		*tab = '\0';
		run->known = realloc(run->known, sizeof(Known) * (size_t) (run->nknown + 1));
		k = &run->known[run->nknown++];
		memset(k, 0, sizeof(*k));
		copy_str(k->key, sizeof(k->key), line);
		copy_str(k->reason, sizeof(k->reason), tab + 1);
	}
	fclose(f);
	return true;
}

/* runs one case; returns how many failures it had */
static int
run_case(Run *run, const Case *c, const char *label)
{
	Plan		plan;
	ConnOutcome out[MAX_CONN];
	Failure		f[MAX_FAIL];
	int			nf;
	bool		printed = false;
	bool		regress = strncmp(label, "regress", 7) == 0;
	bool		from_file = regress || strncmp(label, "replay", 6) == 0;	/* saved already */
	bool		new_kind = false;
	static int	case_counter;

	double		t0 = now_s();

	plan_case(c, run->target.token, &plan);
	wire_run(&run->target, c, &plan, out);
	nf = checker_case(run->checker, c, &plan, out, f, MAX_FAIL, ++case_counter);
	run->last_known[0] = '\0';
	for (int i = 0; i < nf;)
	{
		/* a defect of a library the listener uses: counted apart, not a failure */
		int			k = known_index(run, f[i].key);

		if (k < 0)
		{
			i++;
			continue;
		}
		if (run->known[k].count++ == 0)
			printf("KNOWN %s\n  [%s] %s\n    %s\n    (%s)\n", label, f[i].oracle, f[i].key,
				   (char *) f[i].detail.p, run->known[k].reason);
		copy_str(run->last_known, sizeof(run->last_known), f[i].key);
		failure_free(&f[i]);
		memmove(&f[i], &f[i + 1], sizeof(Failure) * (size_t) (nf - i - 1));
		nf--;
	}
	for (int i = 0; i < c->nconn; i++)
	{
		run->left_open += out[i].hung;
		run->waited += out[i].waited;
	}
	if (now_s() - t0 > 1.0)
	{
		run->slow_cases++;
		if (run->verbose)
			printf("slow %s: %.1f s\n", label, now_s() - t0);
	}

	for (int i = 0; i < nf; i++)
	{
		Kind	   *kind = NULL;

		if (strcmp(f[i].oracle, "crash") == 0)
			run->crashed = true;
		for (int q = 0; q < run->nkinds && kind == NULL; q++)
			if (strcmp(run->kinds[q].key, f[i].key) == 0)
				kind = &run->kinds[q];
		if (kind == NULL)
		{
			run->kinds = realloc(run->kinds, sizeof(Kind) * (size_t) (run->nkinds + 1));
			kind = &run->kinds[run->nkinds++];
			memset(kind, 0, sizeof(*kind));
			copy_str(kind->key, sizeof(kind->key), f[i].key);
			copy_str(kind->oracle, sizeof(kind->oracle), f[i].oracle);
			copy_str(kind->first, sizeof(kind->first), label);
		}
		kind->count++;
		new_kind |= kind->count == 1;
		if (kind->count == 1 || run->verbose || regress)
		{
			if (!printed)
			{
				printf("FAIL %s\n", label);
				printed = true;
			}
			printf("  [%s] %s\n    %s\n", f[i].oracle, f[i].key, (char *) f[i].detail.p);
		}
	}
	if (printed && (!regress || run->verbose || new_kind))
	{
		describe(c, out, run->target.token);
		if (run->save_dir && !from_file)
		{
			char		name[64],
						path[512];
			Buf			comment = {0};

			slug(name, sizeof(name), f[0].oracle);
			snprintf(path, sizeof(path), "%s/%s-%s.case", run->save_dir, name, c->name);
			for (char *p = path + strlen(run->save_dir) + 1; *p; p++)
				if (*p == ' ')
					*p = '-';
			for (int i = 0; i < nf; i++)
				buf_addf(&comment, "%s[%s] %s\n", i ? "" : "broke: ", f[i].oracle, f[i].key);
			if (case_save(c, path, buf_cstr(&comment)))
			{
				printf("    saved as %s\n", path);
				for (int i = 0; i < nf; i++)
					for (int q = 0; q < run->nkinds; q++)
						if (strcmp(run->kinds[q].key, f[i].key) == 0 && run->kinds[q].saved[0] == '\0')
							copy_str(run->kinds[q].saved, sizeof(run->kinds[q].saved), path);
			}
			buf_free(&comment);
		}
		fflush(stdout);
	}
	run->last_oracles[0] = '\0';
	for (int i = 0; i < nf; i++)
		if (strstr(run->last_oracles, f[i].oracle) == NULL &&
			strlen(run->last_oracles) + strlen(f[i].oracle) + 3 < sizeof(run->last_oracles))
		{
			if (run->last_oracles[0])
				strcat(run->last_oracles, ", ");
			strcat(run->last_oracles, f[i].oracle);
		}
	if (nf)
		run->failed_cases++;
	for (int i = 0; i < nf; i++)
		failure_free(&f[i]);
	for (int i = 0; i < c->nconn; i++)
		conn_outcome_free(&out[i]);
	plan_free(c, &plan);
	return nf;
}

static int
name_cmp(const void *a, const void *b)
{
	return strcmp(*(char *const *) a, *(char *const *) b);
}

/* the regression cases, in file-name order; returns how many failed */
static int
run_regress(Run *run, const char *dir)
{
	DIR		   *d = opendir(dir);
	struct dirent *e;
	char	  **names = NULL;
	int			n = 0,
				failed = 0;

	if (d == NULL)
		return 0;
	while ((e = readdir(d)) != NULL)
	{
		size_t		len = strlen(e->d_name);

		if (len > 5 && strcmp(e->d_name + len - 5, ".case") == 0)
		{
			names = realloc(names, sizeof(char *) * (size_t) (n + 1));
			names[n++] = strdup(e->d_name);
		}
	}
	closedir(d);
	qsort(names, (size_t) n, sizeof(char *), name_cmp);
	printf("== %d regression cases (%s)\n", n, dir);
	for (int i = 0; i < n && !run->crashed; i++)
	{
		char		path[1024],
					err[256],
					label[300];
		Case		c;
		int			nf;

		snprintf(path, sizeof(path), "%s/%s", dir, names[i]);
		if (!case_load(path, &c, err, sizeof(err)))
		{
			printf("FAIL regress %s: %s\n", names[i], err);
			failed++;
			continue;
		}
		snprintf(label, sizeof(label), "regress %s", names[i]);
		nf = run_case(run, &c, label);
		if (nf == 0)
			printf("ok   regress %s%s%s%s\n", names[i], run->last_known[0] ? " (shows a known library defect: " : "",
				   run->last_known, run->last_known[0] ? ")" : "");
		else
		{
			failed++;
			buf_addf(&run->regress_failed, "  %-45s %s\n", names[i], run->last_oracles);
		}
		case_free(&c);
		if (nf && run->stop_on_failure)
			break;
	}
	for (int i = 0; i < n; i++)
		free(names[i]);
	free(names);
	return failed;
}

static void
usage(void)
{
	printf("usage: elmo-fuzz --port PORT --captures DIR [options]\n"
		   "  --host ADDR        the listener's address (127.0.0.1)\n"
		   "  --port PORT        the listener's port\n"
		   "  --db CONNINFO      the database (libpq; default from PG* variables)\n"
		   "  --log FILE         the server log, watched for crashes\n"
		   "  --captures DIR     the real ELMO requests the cases start from\n"
		   "  --seed N           the campaign's seed (default: random, printed)\n"
		   "  --cases N          how many generated cases (20000)\n"
		   "  --first N          start at case N of the seed (to repeat one: --first N --cases 1)\n"
		   "  --regress DIR      replay DIR/*.case first\n"
		   "  --replay FILE      replay this case file only (repeatable)\n"
		   "  --save DIR         where failing cases are written\n"
		   "  --print            print the generated cases instead of sending them\n"
		   "  --stop             stop at the first failing case\n"
		   "  --verbose          print every failure, not only the first of each kind\n"
		   "  --timeout-ms N     how long an answer may take (20000, as ELMO waits)\n"
		   "  --known FILE       failures caused by a library, not counted (\"key<TAB>why\" lines)\n"
		   "  --self-test        check the fuzzer's own RFC 3339 reader, UTF-8 check and case files\n");
}

int
main(int argc, char **argv)
{
	static struct option opts[] = {
		{"host", required_argument, 0, 'H'}, {"port", required_argument, 0, 'p'},
		{"db", required_argument, 0, 'd'}, {"log", required_argument, 0, 'l'},
		{"captures", required_argument, 0, 'c'}, {"seed", required_argument, 0, 's'},
		{"cases", required_argument, 0, 'n'}, {"first", required_argument, 0, 'f'},
		{"regress", required_argument, 0, 'r'}, {"replay", required_argument, 0, 'R'},
		{"save", required_argument, 0, 'S'}, {"print", no_argument, 0, 'P'},
		{"stop", no_argument, 0, 'x'}, {"verbose", no_argument, 0, 'v'},
		{"timeout-ms", required_argument, 0, 't'}, {"self-test", no_argument, 0, 'T'},
		{"known", required_argument, 0, 'K'},
		{"help", no_argument, 0, 'h'}, {0},
	};
	Run			run = {0};
	const char *db = "",
			   *log = NULL,
			   *captures = NULL,
			   *regress = NULL;
	const char *replay[64];
	int			nreplay = 0;
	unsigned long long seed = 0;
	bool		have_seed = false,
				print_only = false,
				self_test_only = false;
	long		cases = 20000,
				first = 0;
	int			opt,
				regress_failed = 0;
	char		err[512];
	double		t0,
				t_campaign = 0;
	long		done = 0;

	run.target.host = "127.0.0.1";
	run.target.answer_timeout_ms = 20000;
	while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1)
		switch (opt)
		{
			case 'H':
				run.target.host = optarg;
				break;
			case 'p':
				run.target.port = atoi(optarg);
				break;
			case 'd':
				db = optarg;
				break;
			case 'l':
				log = optarg;
				break;
			case 'c':
				captures = optarg;
				break;
			case 's':
				seed = strtoull(optarg, NULL, 10);
				have_seed = true;
				break;
			case 'n':
				cases = atol(optarg);
				break;
			case 'f':
				first = atol(optarg);
				break;
			case 'r':
				regress = optarg;
				break;
			case 'R':
				if (nreplay < 64)
					replay[nreplay++] = optarg;
				break;
			case 'S':
				run.save_dir = optarg;
				break;
			case 'P':
				print_only = true;
				break;
			case 'x':
				run.stop_on_failure = true;
				break;
			case 'v':
				run.verbose = true;
				break;
			case 't':
				run.target.answer_timeout_ms = atoi(optarg);
				break;
			case 'T':
				self_test_only = true;
				break;
			case 'K':
				if (!load_known(&run, optarg))
				{
					fprintf(stderr, "elmo-fuzz: cannot read %s\n", optarg);
					return 2;
				}
				break;
			default:
				usage();
				return opt == 'h' ? 0 : 2;
		}
	if (captures == NULL || (run.target.port == 0 && !print_only && !self_test_only))
	{
		usage();
		return 2;
	}
	if (!have_seed)
	{
		FILE	   *u = fopen("/dev/urandom", "r");

		if (u == NULL || fread(&seed, sizeof(seed), 1, u) != 1)
			seed = (unsigned long long) time(NULL);
		if (u)
			fclose(u);
		seed %= 1000000000ULL;	/* short enough to type */
	}
	run.gen.seed = seed;
	run.gen.nseeds = seeds_load(captures, &run.gen.seeds);
	if (run.gen.nseeds == 0)
	{
		fprintf(stderr, "elmo-fuzz: no ELMO requests in %s\n", captures);
		return 2;
	}
	if (self_test_only)
		return self_test(&run.gen) ? 1 : 0;
	if (print_only)
	{
		for (long i = first; i < first + cases; i++)
		{
			Case		c;

			gen_case(&run.gen, (uint64_t) i, &c);
			describe(&c, NULL, "${TOKEN}");
			case_free(&c);
		}
		return 0;
	}
	if (run.save_dir)
		mkdir(run.save_dir, 0755);
	run.checker = checker_new(db, log, err, sizeof(err));
	if (run.checker == NULL)
	{
		fprintf(stderr, "elmo-fuzz: %s\n", err);
		return 2;
	}
	run.target.token = checker_token(run.checker);
	setvbuf(stdout, NULL, _IOLBF, 0);

	if (nreplay)
	{
		for (int i = 0; i < nreplay; i++)
		{
			Case		c;
			char		label[600];

			if (!case_load(replay[i], &c, err, sizeof(err)))
			{
				printf("FAIL %s\n", err);
				regress_failed++;
				continue;
			}
			snprintf(label, sizeof(label), "replay %s", replay[i]);
			if (run_case(&run, &c, label) == 0)
				printf("ok   %s\n", label);
			else
				regress_failed++;
			case_free(&c);
		}
		checker_free(run.checker);
		return regress_failed ? 1 : 0;
	}

	printf("elmo-fuzz: seed %llu, %ld cases from %d captured ELMO requests, listener %s:%d\n",
		   seed, cases, run.gen.nseeds, run.target.host, run.target.port);
	printf("elmo-fuzz: repeat this run with FUZZ_SEED=%llu FUZZ_CASES=%ld make fuzz\n", seed, cases);
	t0 = now_s();
	if (regress)
		regress_failed = run_regress(&run, regress);

	if (!run.crashed && !(run.stop_on_failure && regress_failed))
	{
		double		t1 = now_s(),
					last = t1;

		printf("== %ld generated cases, seed %llu\n", cases, seed);
		for (long i = first; i < first + cases && !run.crashed; i++)
		{
			Case		c;
			char		label[128];
			int			nf;

			gen_case(&run.gen, (uint64_t) i, &c);
			copy_str(label, sizeof(label), c.name);
			nf = run_case(&run, &c, label);
			case_free(&c);
			done++;
			if (nf && run.stop_on_failure)
				break;
			if (now_s() - last >= 10)
			{
				last = now_s();
				printf("   %ld cases, %.0f per second, %d failing\n", done, done / (last - t1), run.failed_cases);
			}
		}
		t_campaign = now_s() - t1;
	}

	if (!run.crashed)
	{
		/* the listener still takes what ELMO sends */
		Case		c;
		char		id[33];
		Rng			r;
		int			before = run.failed_cases;

		rng_seed(&r, seed, 0);
		gen_request_id(&r, id);
		gen_valid_forecast(&run.gen, &c, id);
		{
			Plan		plan;
			ConnOutcome out[MAX_CONN];
			Failure		f[MAX_FAIL];
			int			nf;

			plan_case(&c, run.target.token, &plan);
			wire_run(&run.target, &c, &plan, out);
			nf = checker_case(run.checker, &c, &plan, out, f, MAX_FAIL, 0);
			if (out[0].req[0].answer.status != 204 || nf)
			{
				printf("FAIL the final valid forecast (%s) was answered %d%s\n", c.name,
					   out[0].req[0].answer.status, nf ? "; and:" : "");
				for (int i = 0; i < nf; i++)
					printf("  [%s] %s\n    %s\n", f[i].oracle, f[i].key, (char *) f[i].detail.p);
				run.failed_cases++;
			}
			else
				printf("ok   a valid forecast is still answered 204 and stored\n");
			for (int i = 0; i < nf; i++)
				failure_free(&f[i]);
			conn_outcome_free(&out[0]);
			plan_free(&c, &plan);
		}
		case_free(&c);
		{
			Failure		f[MAX_FAIL];
			int			nf = checker_final(run.checker, f, MAX_FAIL, 30);

			for (int i = 0; i < nf; i++)
			{
				printf("FAIL at the end [%s] %s\n    %s\n", f[i].oracle, f[i].key, (char *) f[i].detail.p);
				failure_free(&f[i]);
			}
			if (nf)
				run.failed_cases++;
		}
		(void) before;
	}

	printf("\n== summary: seed %llu, %ld generated cases in %.1f s (%.0f per second)%s\n", seed, done, t_campaign,
		   t_campaign > 0 ? done / t_campaign : 0.0, regress ? ", after the regression cases" : "");
	if (regress)
	{
		if (run.regress_failed.len)
			printf("regression cases failing (file, oracles):\n%s", (char *) run.regress_failed.p);
		else
			printf("every regression case passed\n");
	}
	if (run.nkinds == 0 && run.failed_cases == 0)
		printf("no failure\n");
	else
	{
		printf("%d failing cases; %d kinds of failure:\n", run.failed_cases, run.nkinds);
		for (int i = 0; i < run.nkinds; i++)
			printf("  %5d x [%s] %s\n          first: %s%s%s\n", run.kinds[i].count, run.kinds[i].oracle,
				   run.kinds[i].key, run.kinds[i].first, run.kinds[i].saved[0] ? "\n          saved: " : "",
				   run.kinds[i].saved);
		if (run.crashed)
			printf("the campaign stopped at a crash\n");
	}
	for (int i = 0; i < run.nknown; i++)
		if (run.known[i].count)
			printf("known library defect, not counted: %d x %s\n  (%s)\n", run.known[i].count, run.known[i].key,
				   run.known[i].reason);
	if (run.left_open)
		printf("%d connections whose last request was incomplete were still open 20 ms after our half-close"
			   " (closed by us; not a failure)\n", run.left_open);
	if (run.waited && run.verbose)
		printf("%d connections: an answer that might come (to an odd request) did not within 0.5 s\n", run.waited);
	if (run.slow_cases)
		printf("%d cases took over a second (--verbose lists them)\n", run.slow_cases);
	printf("elmo-fuzz: %.1f s in all\n", now_s() - t0);
	checker_free(run.checker);
	return run.failed_cases || run.nkinds ? 1 : 0;
}
