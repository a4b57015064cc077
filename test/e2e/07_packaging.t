# What a packager and a legal team look at first: the license, PGXN's
# META.json (made from elmo_oscp.control, never out of step with it), and
# make installcheck naming every pg_regress test there is.
. "$(dirname "$0")/tap.sh"
plan 7

head -n 1 "$TOP/LICENSE" | grep -qx 'PostgreSQL License' &&
  grep -q 'Permission to use, copy, modify, and distribute this software' "$TOP/LICENSE" &&
  grep -q 'THE COPYRIGHT HOLDERS SPECIFICALLY DISCLAIM ANY WARRANTIES' "$TOP/LICENSE"
ok $? "LICENSE: the PostgreSQL License"

S=$(mktemp -d /tmp/elmo_meta.XXXXXX)
trap 'rm -rf "$S"' EXIT
cp "$TOP/Makefile" "$TOP/elmo_oscp.control" "$TOP/META.json.in" "$S/"
make -s -C "$S" META.json >/dev/null 2>&1
d=$(diff -u "$TOP/META.json" "$S/META.json"); r=$?
ok $r "META.json is what make META.json makes of elmo_oscp.control now"; [ $r -eq 0 ] || diag "$d"
version=$(sed -n "s/^default_version *= *'\(.*\)'/\1/p" "$TOP/elmo_oscp.control")
is "$(jq -r '.version + " " + .provides.elmo_oscp.version' "$TOP/META.json")" "$version $version" \
   "META.json is valid JSON, at the extension's version ($version)"
is "$(jq -r .license "$TOP/META.json")" postgresql "META.json's license: postgresql"
is "$(jq -r '."meta-spec".version' "$TOP/META.json")" 1.0.0 "META.json follows PGXN's meta spec 1.0.0"

# every pg_regress test with an expected output runs in make installcheck, and only those
regress=$(make -s -C "$TOP" -pn installcheck 2>/dev/null | sed -n 's/^REGRESS = //p' | tr ' ' '\n' | sort | xargs)
have=$(cd "$TOP/expected" && ls *.out | sed -E 's/(_[0-9]+)?\.out$//' | sort -u | xargs)   # <test>_N.out: another major's
is "$regress" "$have" "make installcheck runs every test in sql/ with an expected output: $regress"
for t in $regress; do [ -f "$TOP/sql/$t.sql" ] || { false; break; }; done
ok $? "and each has its sql/<test>.sql"
