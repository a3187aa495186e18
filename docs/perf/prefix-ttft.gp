# TTFT against document length on `small`, cold (the document's first request) and warm (a
# question after it, restored from the prefix cache): the medians of the shared-prefix runs in
# docs/performance.md (2 prefill workers, 128-token questions). Regenerate with
#   gnuplot docs/perf/prefix-ttft.gp
set terminal pngcairo size 800,480 font ",11"
set output "docs/perf/prefix-ttft.png"
set title "Prefix cache on small: TTFT p50 against document length"
set xlabel "document length (tokens)"
set ylabel "TTFT p50 (ms)"
set logscale xy
set xtics ("2K" 2048, "4K" 4096, "8K" 8192, "16K" 16384)
set key center right
set xrange [1400:24000]
set grid
$data << END
2048 11752 1050
4096 25061 1258
8192 51848 1345
16384 55810 849
END
plot $data using 1:2 with linespoints lw 2 pt 7 title "cold (full prefill)", \
     $data using 1:3 with linespoints lw 2 pt 5 title "warm (restored from the cache)"
