-- Last: wake the worker at commit of CREATE EXTENSION or ALTER EXTENSION UPDATE.
SELECT _elmo_kick();
