#!/usr/bin/perl
# postgresql15-leaks.pl — prints memcheck suppressions for the definite
# leaks PostgreSQL 15 itself reports at process exit, whoever called it.
# Not bugs of ours, and not growth:
#  - PostgreSQL frees by resetting memory contexts, not chunk by chunk.  Its
#    backend-lifetime caches (relcache, plan cache, PL/pgSQL's compiled
#    functions, GUC values) live until the process exits, and several are
#    pointed to only from memory-context headers, which memcheck does not
#    scan under PostgreSQL 15's annotations: they look "definitely lost".
#  - A few process-lifetime strings (the process title, the data directory)
#    are kept on purpose with no pointer left.
# The rule: past the allocator (palloc; MemoryContextStrdup and pstrdup; or
# AllocSetAlloc for a whole block) three frames of PostgreSQL's own code
# (the server or PL/pgSQL) and none of ours.  Memory we allocate, or that a
# PostgreSQL function hands back to us (pstrdup, CopyErrorData, lappend,
# psprintf, format_type_be ...), has one of our frames nearer and stays
# reported.  Suppression frames cannot say "this object or that one", so
# every mix of the two objects is written out.
use strict;
use warnings;

my @objs = ('obj:*/postgres.bin', 'obj:*/plpgsql.so');
my @rules = (    # name, top frames, how many PostgreSQL frames must follow
  ['palloc',      ['fun:palloc*'],                4],
  ['repalloc',    ['fun:repalloc*'],              4],
  ['mcxt_alloc',  ['fun:MemoryContextAlloc*'],    5],
  ['block',       ['fun:malloc'],                 6],
  ['strdup',      ['fun:malloc', 'fun:strdup'],   3],
);

sub mixes {
  my $n = shift;
  return ([]) if $n == 0;
  return map { my $m = $_; map { [$_, @$m] } @objs } mixes($n - 1);
}

for my $r (@rules) {
  my ($name, $top, $n) = @$r;
  my $i = 0;
  for my $mix (mixes($n)) {
    print "{\n   pg15_leak_${name}_", $i++, "\n   Memcheck:Leak\n   match-leak-kinds: definite\n",
          map({ "   $_\n" } @$top, @$mix), "}\n";
  }
}
print <<'FIXED';
{
   pg15_leak_process_title
   Memcheck:Leak
   match-leak-kinds: definite
   fun:malloc
   fun:save_ps_display_args
   fun:main
}
{
   pg15_leak_postmaster_startup_strdup
   Memcheck:Leak
   match-leak-kinds: definite
   fun:malloc
   fun:strdup
   fun:PostmasterMain
   fun:main
}
FIXED
