#!/usr/bin/perl
# summarize.pl LOGDIR TOP PGSRC REPORT — read memcheck's logs (one per server
# process), merge repeated errors, print a summary and write every distinct
# error in full to REPORT.  Exit 1 when an error involves elmo_oscp's code,
# or when a server process was killed by a signal memcheck saw (a segfault,
# or an abort from a failed assertion), wherever it happened.
#
# A process stopped by SIGQUIT (immediate shutdown, or the restart after a
# crash: PostgreSQL's handler calls _exit at once) leaves its memory as it
# was mid-operation: memory of a per-turn context not yet reset looks lost.
# Its leaks are listed apart and not counted; its other errors count.
# (--trace-signals in run.sh logs "delivering signal 3" for it.)
#
# An error is the project's when any of its stacks (the access, and where
# memcheck gives them the free, the allocation or the origin of an
# uninitialised value) has a frame in TOP/src or elmo_oscp.so.  A definite
# leak is the project's when our code asked for the memory, or got it back
# from the function that allocated it: one of the first three frames past
# the allocator (malloc, palloc, pstrdup, StringInfo, List ...) and past
# libraries (libcurl's allocations on our behalf count as ours) is in
# TOP/src.  PostgreSQL keeps backend-lifetime memory until exit on purpose;
# a leak made deeper inside it is not ours even when our SPI call led to it
# (postgresql15-leaks.supp silences those with the same rule).
use strict;
use warnings;

my ($logdir, $top, $pgsrc, $report) = @ARGV;
die "usage: summarize.pl LOGDIR TOP PGSRC REPORT\n" unless defined $report;

my %alloc_wrapper = map { $_ => 1 } qw(
  malloc calloc realloc strdup strndup
  palloc palloc0 palloc_extended MemoryContextAlloc MemoryContextAllocZero
  MemoryContextAllocZeroAligned MemoryContextAllocExtended MemoryContextStrdup
  pstrdup pnstrdup psprintf pvsnprintf repalloc repalloc_huge MemoryContextAllocHuge
  AllocSetAlloc AllocSetRealloc GenerationAlloc SlabAlloc
  initStringInfo makeStringInfo enlargeStringInfo appendStringInfo
  appendStringInfoString appendStringInfoChar appendBinaryStringInfo
  appendStringInfoVA appendStringInfoSpaces
  cstring_to_text cstring_to_text_with_len text_to_cstring
  new_list enlarge_list lappend lappend_int lappend_oid lcons list_copy
  list_make1_impl list_make2_impl list_make3_impl list_make4_impl
);

sub frame_kind {    # project, pg or lib
  my $f = shift;
  return 'project' if index($f, "$top/src/") >= 0 || $f =~ /elmo_oscp\.so/;
  return 'pg' if index($f, "$pgsrc/") >= 0 || $f =~ m{\(in \S*/postgres\.bin\)};
  return 'lib';
}

sub frame_fun { my $f = shift; $f =~ /^(\S+)/; return $1 // '?'; }

sub short {    # a frame as people read it
  my $f = shift;
  $f =~ s/^0x[0-9A-Fa-f]+: //;
  $f =~ s{\Q$top\E/}{}g;
  $f =~ s{\Q$pgsrc\E/}{postgresql:}g;
  $f =~ s{\(in \S*/([^/)]+)\)}{($1)}g;
  return $f;
}

# ---- read the logs
my (@errors, @notes, %quit);
opendir(my $dh, $logdir) or die "$logdir: $!\n";
for my $file (sort grep { /\.log$/ } readdir $dh) {
  open(my $fh, '<', "$logdir/$file") or die "$logdir/$file: $!\n";
  my (%cur, %in_err, %term);
  while (my $line = <$fh>) {
    chomp $line;
    if ($line =~ /^--(\d+)-- delivering signal 3 \(SIGQUIT\)/) { $quit{$1} = 1; next; }
    next unless $line =~ /^==(\d+)== ?(.*)$/;
    my ($pid, $text) = ($1, $2);
    if ($text eq 'VALGRINDERROR-BEGIN') { $in_err{$pid} = 1; $cur{$pid} = []; next; }
    if ($text eq 'VALGRINDERROR-END') {
      push @errors, { pid => $pid, file => $file, lines => $cur{$pid} } if $in_err{$pid};
      $in_err{$pid} = 0;
      next;
    }
    if ($in_err{$pid}) { push @{ $cur{$pid} }, $text if $text =~ /\S/; next; }
    # A server process killed by a signal memcheck reports (SIGSEGV, and
    # SIGABRT from a failed assertion); SIGKILL leaves no trace.
    if ($text =~ /^Process terminating with default action of signal/) {
      $term{$pid} = [$text];
      next;
    }
    if ($term{$pid}) {
      if ($text =~ /\S/) { push @{ $term{$pid} }, $text; }
      else { push @errors, { pid => $pid, file => $file, lines => delete $term{$pid} }; }
      next;
    }
    push @notes, "$file: $text"
      if $text =~ /^(Warning: |valgrind: |Valgrind's memory management|.*unhandled instruction)/
         && $text !~ /set address range perms|client switching stacks|noted but unhandled ioctl/;
  }
  for my $pid (keys %term) { push @errors, { pid => $pid, file => $file, lines => $term{$pid} }; }
}
closedir $dh;
my $processes = () = glob("$logdir/*.log");
die "no memcheck logs in $logdir: nothing ran under memcheck\n" unless $processes;

# ---- classify and merge
my %distinct;
for my $e (@errors) {
  my @sections;    # [ header, [frames] ]
  for my $l (@{ $e->{lines} }) {
    if ($l =~ /^\s+(?:at|by) (0x[0-9A-Fa-f]+: .*)$/) {
      push @sections, ['', []] unless @sections;
      push @{ $sections[-1][1] }, $1;
    } else {
      push @sections, [$l =~ s/^\s+//r, []];
    }
  }
  next unless @sections;
  my $kind = $sections[0][0];
  my $leak = $kind =~ /definitely lost/;
  $kind =~ s/^[\d,]+ (\([\d,]+ direct, [\d,]+ indirect\) )?bytes in [\d,]+ blocks are definitely lost.*/definitely lost/;
  my $ours = 0;
  if ($leak) {
    my $seen = 0;
    for my $f (@{ $sections[0][1] }) {
      my $k = frame_kind($f);
      next if $k eq 'lib' || ($seen == 0 && $alloc_wrapper{ frame_fun(short($f)) });
      if ($k eq 'project') { $ours = 1; last; }
      last if ++$seen == 3;
    }
  } else {
    for my $s (@sections) { $ours = 1 if grep { frame_kind($_) eq "project" } @{ $s->[1] }; }
  }
  # The same access from the same code is one error, whatever block it hit.
  my @top = @{ $sections[0][1] };
  splice(@top, 6) if @top > 6;
  my $sig = join '|', $ours, $kind =~ s/ of size \d+//r, map { frame_fun(short($_)) } @top;
  $ours = 2 if $kind =~ /^Process terminating/;    # a crash, whoever's
  $ours = 3 if $leak && $quit{ $e->{pid} };          # stopped mid-operation
  my $d = $distinct{$sig} //= { kind => $kind, ours => $ours, count => 0, pids => {}, sections => \@sections, file => $e->{file} };
  $d->{count}++;
  $d->{pids}{ $e->{pid} } = 1;
}

# ---- report
my @crash  = grep { $_->{ours} == 2 } values %distinct;
my @quit   = sort { $b->{count} <=> $a->{count} } grep { $_->{ours} == 3 } values %distinct;
my @ours   = sort { $b->{count} <=> $a->{count} } grep { $_->{ours} == 1 } values %distinct;
my @theirs = sort { $b->{count} <=> $a->{count} } grep { $_->{ours} == 0 } values %distinct;
my $n_quit = 0; $n_quit += $_->{count} for @quit;
my $n_ours = 0; $n_ours += $_->{count} for @ours;
my $n_theirs = 0; $n_theirs += $_->{count} for @theirs;

sub render {
  my ($d, $max_frames) = @_;
  my @out = (sprintf "%s  (x%d in %d process%s, first in %s)", $d->{kind}, $d->{count},
             scalar(keys %{ $d->{pids} }), keys %{ $d->{pids} } == 1 ? '' : 'es', $d->{file});
  my $first = 1;
  for my $s (@{ $d->{sections} }) {
    push @out, "  $s->[0]" unless $first;
    my @f = @{ $s->[1] };
    my $n = $max_frames && @f > $max_frames ? $max_frames : scalar @f;
    push @out, map { "      " . short($_) } @f[0 .. $n - 1];
    push @out, "      ..." if $n < @f;
    $first = 0;
  }
  return join("\n", @out) . "\n";
}

open(my $rf, '>', $report) or die "$report: $!\n";
print $rf "memcheck report: logs in $logdir\n\n";
print $rf "== server processes killed by a signal: " . scalar(@crash) . "\n\n";
print $rf render($_, 0), "\n" for @crash;
print $rf "== in elmo_oscp's code: $n_ours errors, " . scalar(@ours) . " distinct\n\n";
print $rf render($_, 0), "\n" for @ours;
print $rf "== in PostgreSQL or libraries only: $n_theirs errors, " . scalar(@theirs) . " distinct\n\n";
print $rf render($_, 0), "\n" for @theirs;
print $rf "== leaks of processes stopped by SIGQUIT (not counted): $n_quit, " . scalar(@quit) . " distinct\n\n";
print $rf render($_, 0), "\n" for @quit;
print $rf "== memcheck's own warnings\n", map { "$_\n" } @notes;
close $rf;

print "memcheck: $processes server processes checked, " . scalar(@errors) . " errors reported\n";
printf "  server processes killed by a signal:  %d\n", scalar @crash;
printf "  in elmo_oscp's code:                  %d (%d distinct)\n", $n_ours, scalar @ours;
printf "  in PostgreSQL or libraries only:      %d (%d distinct, not counted against us)\n", $n_theirs, scalar @theirs;
printf "  leaks of processes stopped by SIGQUIT: %d (%d distinct, not counted: see the report)\n", $n_quit, scalar @quit;
if (@crash) {
  print "\n-- server processes killed by a signal\n";
  print render($_, 12), "\n" for @crash;
}
if (@ours) {
  print "\n-- errors in elmo_oscp's code (top frames; all of them in $report)\n";
  print render($_, 8), "\n" for @ours;
}
if (@theirs) {
  print "\n-- errors with no elmo_oscp frame (kind and top frames)\n";
  my (%n, @order);
  for my $d (@theirs) {
    my @f = map { frame_fun(short($_)) } @{ $d->{sections}[0][1] };
    splice(@f, 5) if @f > 5;
    my $line = "$d->{kind}: " . join(' < ', @f);
    push @order, $line unless $n{$line};
    $n{$line} += $d->{count};
  }
  printf "  x%-5d %s\n", $n{$_}, $_ for sort { $n{$b} <=> $n{$a} } @order;
}
print "\nmemcheck warnings:\n", map { "  $_\n" } @notes[0 .. ($#notes > 9 ? 9 : $#notes)] if @notes;
exit(@ours || @crash ? 1 : 0);
