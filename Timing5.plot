set output 'Timing5.svg
set terminal svg
set multiplot
set grid
set title "Clients duration"
set xlabel "audio cycles"
set ylabel "usec"
plot "/tmp/rf/profiler.log" using 10 title "rtupscale-capture/54" with lines, "/tmp/rf/profiler.log" using 18 title "pacat/76" with lines, "/tmp/rf/profiler.log" using 26 title "rtupscale-capture/61" with lines, "/tmp/rf/profiler.log" using 34 title "rtupscale-capture/56" with lines
unset multiplot
unset output
