set output 'Timing4.svg
set terminal svg
set multiplot
set grid
set title "Clients scheduling latency"
set xlabel "audio cycles"
set ylabel "usec"
plot "/tmp/rf/profiler.log" using 9 title "rtupscale-capture/54" with lines, "/tmp/rf/profiler.log" using 17 title "pacat/76" with lines, "/tmp/rf/profiler.log" using 25 title "rtupscale-capture/61" with lines, "/tmp/rf/profiler.log" using 33 title "rtupscale-capture/56" with lines
unset multiplot
unset output
