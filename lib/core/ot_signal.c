/* ot_signal: SIGINT/SIGTERM only set a flag; loops drain, commit and exit. */
#include <string.h>

#include "ot_signal.h"

volatile sig_atomic_t ot_stop;

static void
on_signal(int sig)
{
	(void)sig;
	ot_stop = 1;
}

void
ot_signal_install(void)
{
	struct sigaction sa;

	memset(&sa, 0, sizeof sa);
	sa.sa_handler = on_signal;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	sa.sa_handler = SIG_IGN;
	sigaction(SIGPIPE, &sa, NULL);
}
