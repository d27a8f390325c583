/* CRIU compel's <compel/task-state.h>: what compel_stop_task() reports. */
#ifndef COMPEL_TASK_STATE_H
#define COMPEL_TASK_STATE_H

enum __compel_task_state {
	COMPEL_TASK_ALIVE = 0x01,
	COMPEL_TASK_DEAD = 0x02,
	COMPEL_TASK_STOPPED = 0x03,
	COMPEL_TASK_ZOMBIE = 0x06,
	COMPEL_TASK_MAX = 0x7f
};

#endif /* COMPEL_TASK_STATE_H */
